"""SIDTViT: a plain ViT whose per-head, MLP and embedding widths are searchable.

Three modes share one set of layers and timm's parameter names:

- ``dense``: a plain ViT (optionally ViTDet-style: window attention with a few
  global blocks, decomposed relative positions), no masks;
- ``search``: learnable masks (initialised to 1.0) on the searched dimensions;
- ``pruned``: built from a subnet file; widths differ per layer and per head.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...utils.ckpt_convert import convert_vit_state_dict
from ...utils.safe_load import CheckpointMismatchError, checkpoint_source
from ...utils.stack import MODELS, build_norm
from ...utils.state_dict import compare_state_dicts, explain_backbone_keys
from ..layers import PatchEmbed, SIDTAttention, SIDTBlock, SIDTMlp, apply_lowrank_structure
from ..layers.block import masked_norm
from ..slicing import is_mask_key, rel_pos_columns, slice_vit_state_dict
from ..subnet import Subnet
from .vit_spec import ARCH_ZOO, ViTSpec, resolve_arch

__all__ = ['SIDTViT']

def _same_path(a, b) -> bool:
    """Whether a recorded subnet path names the file ``b`` (relative ones from here)."""
    if not isinstance(a, str) or not isinstance(b, str) or not os.path.isfile(b):
        return False
    return a == b or os.path.realpath(a) == os.path.realpath(b)


@MODELS.register_module()
class SIDTViT(BaseModule):
    """Vision Transformer with searchable intrinsic dimensions (SiDT).

    Args:
        arch: ``'tiny'`` (192/12/3), ``'small'`` (384/12/6), ``'base'`` (768/12/12),
            ``'large'`` (1024/24/16), ``'huge'`` (1280/32/16), or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and optionally ``mlp_ratio``.
        patch_size: patch side; inputs of any size are padded to a multiple of it.
        img_size: image size; sets the grid of ``pos_embed`` (interpolated, bicubic, to
            the input's grid at run time), of the global blocks' relative-position
            tables, and the default size of MACs counts.
        pretrain_img_size: ViTDet's name: with ``img_size`` also given, the size the
            position embedding is made for (e.g. 224 with ``img_size=1024``) while
            ``img_size`` stays the input size; alone, the same as ``img_size``.
        with_cls_token: prepend a class token (classification; not with windows).
        final_norm: apply a final LayerNorm.
        out_type: ``'featmap'`` (one stride-``patch_size`` NCHW map, detection),
            ``'cls_token'`` or ``'avg'`` (B, C) for classification.
        window_size: window attention side (0: all blocks global).
        global_attn_indexes: blocks that stay global when ``window_size > 0``.
        use_abs_pos / use_rel_pos / rel_pos_zero_init: position encodings (ViTDet).
        mode: ``'dense'``, ``'search'`` or ``'pruned'``.
        subnet: pruned mode: a :class:`Subnet`, its dict, or a path to its JSON.
        search_dims: search mode: which of ``'attn'``, ``'mlp'``, ``'embed'`` get masks.
        split_qkv: search mode: separate q/k and v masks instead of one per head dim.
        pruned_layout: pruned mode: how heads of unequal widths run, ``'grouped'``
            (equal widths share an attention call; no padding) or ``'padded'`` (one call,
            heads zero-padded to the widest); by default the layout the subnet file
            records (its selection's head-width policy), else ``'grouped'``.
        with_cp: activation checkpointing per block while training.
        frozen_stages: freeze the embeddings (0) and the first N blocks (N).

    ViTDet's argument names are accepted too: ``embed_dim, depth, num_heads,
    mlp_ratio, window_block_indexes, pretrain_img_size, pretrain_use_cls_token``. The
    arguments resolve once into :attr:`spec`, a frozen :class:`ViTSpec`; the same
    architecture in another mode is :meth:`to_dense`, :meth:`to_search` or
    :meth:`to_pruned`.
    """

    arch_zoo = ARCH_ZOO

    def __init__(self, arch: str | dict | None = None, init_cfg: dict | None = None,
                 **options):
        super().__init__(init_cfg=init_cfg)
        self.spec = spec = ViTSpec.resolve(arch, **options)
        self._adopt(spec)
        D = self.embed_dims
        norm_cfg = spec.norm_cfg

        def norm_layer(dim: int) -> nn.Module:
            return build_norm(norm_cfg, dim)
        # ---- layers (timm names)
        self.patch_embed = PatchEmbed(spec.in_channels, D, spec.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if spec.with_cls_token else None
        self.pos_embed = None
        if spec.use_abs_pos:
            n_pos = self.num_prefix_tokens + self.pretrain_grid[0] * self.pretrain_grid[1]
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, D))
        self.embed_mask = nn.Parameter(torch.ones(D)) if 'embed' in spec.search_dims else None
        dpr = torch.linspace(0, spec.drop_path_rate, self.num_layers).tolist()
        self.blocks = nn.ModuleList(
            SIDTBlock(D, self._attention(spec, i), SIDTMlp(D, self._hidden(i), mask='mlp' in
                                                           spec.search_dims),
                      window_size=spec.window_of(i), drop_path=dpr[i], norm_layer=norm_layer)
            for i in range(self.num_layers))
        self.norm = norm_layer(D) if spec.final_norm else None
        if self.subnet is not None and self.subnet.lowrank:
            self._apply_lowrank(self.subnet.lowrank, spec.subnet_file)
        self._init_default()
        self._freeze_stages()
        self._register_state_dict_hook(SIDTViT._record_subnet)
        self._register_load_state_dict_pre_hook(self._check_incoming_state)

    # ------------------------------------------------------------ arguments
    def _adopt(self, spec: ViTSpec) -> None:
        """The spec's settings as the attributes the rest of the package reads."""
        self.embed_dims_dense, self.num_layers = spec.embed_dims, spec.num_layers
        self.num_heads, self.head_dim, self.mlp_hidden = (spec.num_heads, spec.head_dim,
                                                          spec.mlp_hidden)
        self.mode, self.patch_size, self.img_size = spec.mode, spec.patch_size, spec.img_size
        self.pretrain_grid, self.input_grid = spec.pretrain_grid, spec.input_grid
        self.with_cls_token = spec.with_cls_token
        self.num_prefix_tokens = int(spec.with_cls_token)
        self.final_norm, self.out_type = spec.final_norm, spec.out_type
        self.use_abs_pos, self.use_rel_pos = spec.use_abs_pos, spec.use_rel_pos
        self.window_size, self.global_attn_indexes = spec.window_size, spec.global_attn_indexes
        self.with_cp, self.frozen_stages = spec.with_cp, spec.frozen_stages
        self.subnet, self.search_dims, self.split_qkv = (spec.subnet, spec.search_dims,
                                                         spec.split_qkv)
        self.embed_dims = spec.width

    def _hidden(self, i: int) -> int:
        return len(self.subnet.blocks[i]['mlp']) if self.subnet is not None else self.mlp_hidden

    def _attention(self, spec: ViTSpec, i: int) -> SIDTAttention:
        """Block ``i``'s attention at its widths (the subnet's in pruned mode)."""
        ws = spec.window_of(i)
        qk_dims = v_dims = rel_index = None
        if self.subnet is not None:
            b, active = self.subnet.blocks[i], self.subnet.active_heads(i)
            qk_dims = [len(b['qk'][h]) for h in active]
            v_dims = [len(b['v'][h]) for h in active]
            rel_index = rel_pos_columns(self.subnet, i) if spec.use_rel_pos else None
        mask = None
        if 'attn' in spec.search_dims:
            mask = 'split' if spec.split_qkv else 'shared'
        return SIDTAttention(self.embed_dims, spec.num_heads, head_dim=spec.head_dim,
                             qkv_bias=spec.qkv_bias, qk_dims=qk_dims, v_dims=v_dims, mask=mask,
                             use_rel_pos=spec.use_rel_pos,
                             rel_pos_size=(ws, ws) if ws > 0 else spec.input_grid,
                             rel_pos_index=rel_index, rel_pos_zero_init=spec.rel_pos_zero_init,
                             layout=spec.pruned_layout)

    def to_dense(self) -> SIDTViT:
        """A dense SIDTViT of this architecture and these settings (new weights)."""
        return SIDTViT(**dict(self.spec.kwargs(), mode='dense', subnet=None,
                              pruned_layout=None))

    def to_search(self, dims: Sequence[str] = ('attn', 'mlp'),
                  split_qkv: bool | None = None) -> SIDTViT:
        """A search-mode SIDTViT of this architecture with masks on ``dims`` (new weights)."""
        split = self.spec.split_qkv if split_qkv is None else split_qkv
        return SIDTViT(**dict(self.spec.kwargs(), mode='search', subnet=None,
                              search_dims=tuple(dims), split_qkv=split, pruned_layout=None))

    def to_pruned(self, subnet: Subnet | dict | str, layout: str | None = None) -> SIDTViT:
        """A SIDTViT pruned to ``subnet`` (running its heads in ``layout``, by default the one
        the subnet records), with new weights (:func:`~sidt_mmdet.export.prune_backbone`
        slices this one's)."""
        return SIDTViT(**dict(self.spec.kwargs(), mode='pruned', subnet=subnet,
                              pruned_layout=layout))

    @classmethod
    def out_channels_from_cfg(cls, cfg: dict) -> int:
        """Width of the output map of a SIDTViT config, without building it."""
        if cfg.get('mode', 'dense') == 'pruned':
            if cfg.get('subnet') is None:
                raise ValueError("mode='pruned' needs subnet (a Subnet, dict or path to JSON)")
            return len(Subnet.coerce(cfg['subnet']).kept_embed)
        return resolve_arch(cfg.get('arch'), cfg.get('embed_dim'), cfg.get('depth'),
                            cfg.get('num_heads'), cfg.get('mlp_ratio'))['embed_dims']

    def _apply_lowrank(self, lowrank: dict, where: str) -> None:
        """Rebuild the factorized Linears a subnet file records (``lowrank.ranks``).

        Done before init and freezing so the new layers are initialised and frozen like
        the rest.
        """
        try:
            apply_lowrank_structure(self, lowrank['ranks'])
        except ValueError as e:
            raise ValueError(f'{where}: lowrank.ranks does not fit this backbone: {e}') from None

    # ------------------------------------------------------------- weights
    def _init_default(self):
        # timm's init (init_weights_vit_timm) so dense training starts where timm's does.
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'])
            self._is_init = True
        else:
            super().init_weights()

    def rel_pos_lengths(self) -> dict[str, int]:
        return {f'blocks.{i}.attn.{k}': getattr(blk.attn, k).shape[0]
                for i, blk in enumerate(self.blocks) if blk.attn.use_rel_pos
                for k in ('rel_pos_h', 'rel_pos_w')}

    def load_pretrained(self, checkpoint: str | dict) -> None:
        """Load timm / DeiT / MAE / SAM / ViTDet / our own weights into any mode.

        Dense weights are sliced by the subnet in pruned mode; weights that already
        have the pruned shapes load as they are. Shape mismatches raise a
        ValueError listing them; missing and unexpected keys are logged.
        """
        where = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
        ckpt = checkpoint
        if isinstance(checkpoint, str):
            from mmengine.runner.checkpoint import CheckpointLoader  # imports OpenCV
            ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        try:
            state, notes = convert_vit_state_dict(
                ckpt, patch_size=self.patch_size, grid=self.pretrain_grid,
                num_prefix_tokens=self.num_prefix_tokens, rel_pos_lengths=self.rel_pos_lengths())
        except ValueError as e:
            raise ValueError(f'{where}: {e}') from None
        if self.subnet is not None and self._is_dense_layout(state):
            state = slice_vit_state_dict(state, self.subnet)
            notes.append('sliced dense weights to the subnet (masks folded where present)')
        own = self.state_dict()
        mismatch = compare_state_dicts(own, state).shapes
        if mismatch:
            raise ValueError(f'{where}: checkpoint does not fit this SIDTViT '
                             f'(embed_dims={self.embed_dims}, heads={self.num_heads}, '
                             f'layers={self.num_layers}); shape mismatches:\n  '
                             + '\n  '.join(mismatch))
        # Converted pretrained weights may lack tensors on purpose (MAE has no rel-pos
        # tables): they are reported below, not refused as in a load_from or --resume.
        self._partial_load_ok = True
        try:
            result = self.load_state_dict(state, strict=False)
        finally:
            self._partial_load_ok = False
        missing = [k for k in result.missing_keys if not k.endswith('_mask')]
        for note in notes:
            print_log(f'SIDTViT: {note}', logger='current')
        print_log(f'SIDTViT: loaded {len(state) - len(result.unexpected_keys)} tensors from '
                  f'{where}; missing {missing or "none"}; unexpected '
                  f'{result.unexpected_keys or "none"}', logger='current')

    @staticmethod
    def _record_subnet(module, state_dict, prefix, local_metadata) -> None:
        # Every checkpoint of a pruned backbone (pruned.pth, retrain iter_N.pth) carries the
        # structure it was built from, so loading it into another one is caught by name.
        if module.subnet is not None:
            local_metadata['sidt_subnet'] = dict(digest=module.subnet.digest(),
                                                 file=module.subnet_file)

    def _check_incoming_state(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Refuse a state dict that would load only in part, whatever loader calls it.

        mmengine's ``load_from`` / ``--resume`` / ``tools/test.py`` load with ``strict=False``
        and only log shape mismatches and dropped keys, so a search checkpoint or another
        export's ``pruned.pth`` would leave layers randomly initialised (or masks silently
        dropped) and the run would go on. This pre-hook runs inside every such load.
        """
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not keys:
            return
        source = checkpoint_source(state_dict[keys[0]]) or 'the checkpoint'
        masks = [k for k in keys if is_mask_key(k)]
        built = (f'this SIDTViT is pruned to {self.subnet_file}' if self.mode == 'pruned'
                 else f'this SIDTViT is {self.mode}')
        if masks and self.mode != 'search':
            hint = ('evaluate the search itself with its search config, or export it first '
                    '(tools/export_subnet.py SEARCH_CONFIG CHECKPOINT --keep-ratio R -o DIR) and '
                    'use the retrain config with model.backbone.subnet=DIR/subnet.json '
                    'load_from=DIR/pruned.pth')
            effect = ('the masks would be dropped and the unmasked weights used'
                      if self.mode == 'dense' else 'its dense weights do not fit')
            raise CheckpointMismatchError(
                f'{source} is a SiDT search checkpoint ({len(masks)} mask tensors such as '
                f'{masks[0]!r}) but {built}: {effect}. To use it, {hint}.')
        theirs = local_metadata.get('sidt_subnet') if isinstance(local_metadata, dict) else None
        if self.mode == 'pruned' and isinstance(theirs, dict) and \
                theirs.get('digest') != self.subnet.digest():
            if _same_path(theirs.get('file'), self.subnet_file):
                # one path, two subnets: the export was written again over the old one
                raise CheckpointMismatchError(
                    f'{source} was made with the subnet that {self.subnet_file} held then '
                    f'(digest {theirs.get("digest")}), but that export was overwritten after '
                    f'{source} was made: a later export (tools/export_subnet.py --overwrite) '
                    f'replaced its subnet.json (digest now {self.subnet.digest()}) and '
                    f'pruned.pth. {source} belongs to the earlier export: retrain from the new '
                    f'pruned.pth beside {self.subnet_file}, or set model.backbone.subnet to a '
                    'copy of the earlier subnet.json')
            raise CheckpointMismatchError(
                f'{source} was exported for the subnet {theirs.get("file")!r} (digest '
                f'{theirs.get("digest")}) but the model was built from {self.subnet_file} '
                f'(digest {self.subnet.digest()}): set model.backbone.subnet to the subnet.json '
                f'of the export that wrote {source}, or load the pruned.pth exported with '
                f'{self.subnet_file}')
        own = {prefix + n: t.shape for n, t in self.state_dict().items()}
        bad = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k])}'
               for k in keys if k in own and torch.is_tensor(state_dict[k])
               and state_dict[k].shape != own[k]]
        if bad:
            hint = (f'; it is not the export of {self.subnet_file} (load the pruned.pth written '
                    'beside that subnet file)' if self.mode == 'pruned' else
                    "; for pretrained weights of another size use init_cfg=dict(type='Pretrained'"
                    ', checkpoint=...), which resamples them')
            if all(b.split(':')[0].endswith(('rel_pos_h', 'rel_pos_w')) for b in bad):
                hint = ('; only relative-position tables differ: the checkpoint was trained with '
                        'another window_size, global_attn_indexes or img_size (the config has '
                        f'window_size={self.window_size}, global_attn_indexes='
                        f'{list(self.global_attn_indexes)}, img_size={self.img_size})' + hint)
            raise CheckpointMismatchError(
                f'{source} does not fit the backbone ({built}): {len(bad)} tensors of another '
                'shape, e.g.\n  ' + '\n  '.join(bad[:5]) + hint)
        if getattr(self, '_partial_load_ok', False):
            return
        # mmengine would only log these keys and go on with some tensors left at their
        # initial values. A search started from a dense checkpoint lacks its masks on purpose.
        given = {k[len(prefix):] for k in keys}
        missing = sorted(k for k in set(own) - {prefix + g for g in given}
                         if not (self.mode == 'search' and is_mask_key(k)))
        unexpected = sorted(g for g in given if prefix + g not in own)
        if missing or unexpected:
            settings = self.spec.settings()
            raise CheckpointMismatchError(
                f'{source} does not fit the backbone ({built}): ' + explain_backbone_keys(
                    [k[len(prefix):] for k in missing], unexpected, settings, prefix)
                + ". (Backbone-only pretrained weights go in model.backbone.init_cfg=dict("
                "type='Pretrained', checkpoint=...), which converts them.)")

    @property
    def subnet_file(self) -> str:
        """Where the subnet came from: its path, or ``'subnet'`` when given as an object."""
        return self.spec.subnet_file

    def _is_dense_layout(self, state) -> bool:
        w = state.get('blocks.0.attn.qkv.weight')
        return w is not None and tuple(w.shape) == (3 * self.embed_dims_dense,
                                                    self.embed_dims_dense)

    # --------------------------------------------------------------- search
    def mask_parameters(self) -> OrderedDict[str, nn.Parameter]:
        """The search masks by name (empty unless ``mode='search'``)."""
        return OrderedDict((n, p) for n, p in self.named_parameters() if n.endswith('_mask'))

    @property
    def out_channels(self) -> int:
        return self.embed_dims

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        B = x.shape[0]
        # The embedding mask (search) scales weights, not tokens: every write into the
        # residual stream and every normalised read (see SIDTBlock).
        m = self.embed_mask
        x, hw = self.patch_embed(x, out_scale=m)
        if self.cls_token is not None:
            cls = self.cls_token if m is None else self.cls_token * m
            x = torch.cat([cls.expand(B, -1, -1), x], dim=1)
        if self.pos_embed is not None:
            pos = resample_abs_pos_embed(self.pos_embed, list(hw), old_size=self.pretrain_grid,
                                         num_prefix_tokens=self.num_prefix_tokens)
            x = x + (pos if m is None else pos * m)
        for blk in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(blk, x, hw, m, use_reentrant=False)
            else:
                x = blk(x, hw, m)
        if self.norm is not None:
            x = masked_norm(self.norm, x, m)
        if self.out_type == 'cls_token':
            return (x[:, 0],)
        patches = x[:, self.num_prefix_tokens:]
        if self.out_type == 'avg':
            return (patches.mean(dim=1),)
        return (patches.transpose(1, 2).reshape(B, -1, *hw),)

    # ---------------------------------------------------------- fine-tuning
    def get_layer_depth(self, param_name: str, prefix: str = '') -> tuple[int, int]:
        """Layer id for layer-wise lr decay (mmpretrain's constructor calls this)."""
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed', 'embed_mask') or name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed]
        frozen += list(self.blocks[:self.frozen_stages])
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad = False
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def extra_repr(self) -> str:
        return (f'mode={self.mode}, embed_dims={self.embed_dims}, layers={self.num_layers}, '
                f'heads={self.num_heads}, window={self.window_size}, '
                f'global={list(self.global_attn_indexes)}, rel_pos={self.use_rel_pos}')
