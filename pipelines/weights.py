"""`stc weights import CKPT.pth --out RUN`: the authors' released checkpoints as stc runs.

    stc weights import ckpt-bfvr.pth --out runs/bfvr [--variant bfvr|deflicker|deflickersd]

The .pth is read with torch.load(weights_only=True) (no code in it can run), its sizes are
inferred from the tensor shapes and the variant from its keys (n_layers 9: bfvr, 6:
de-flicker) unless given, and it is written as a Stage II run folder (safetensors, config,
provenance.json with the source file name, SHA-256 and variant) that `stc enhance
--checkpoint RUN` and `stc train stage2 --init RUN` accept. torch is imported only when the
command runs.
"""

from __future__ import annotations

import argparse
import sys

from stc.pipelines.options import print_next

DESCRIPTION = """Import model weights from elsewhere as an stc run folder.

  stc weights import ckpt-bfvr.pth --out RUN [--variant bfvr|deflicker|deflickersd]

The authors' releases (github.com/Dixin-Lab/BFVR-STC/releases/tag/init): ckpt-bfvr.pth
(blind restoration), ckpt-defilcker.pth (brightness de-flickering), ckpt-deflickersd.pth
(pixel de-flickering). Download them yourself; stc never downloads weights."""


# The built-in curriculum that continues each release as the authors trained it.
FINETUNE_CURRICULUM = {"bfvr": "finetune-bfvr", "deflicker": "brightness", "deflickersd": "pixel"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="import released weights as a run folder",
                                   description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("import", help="an authors' BFVR-STC .pth -> a Stage II run folder")
    p.add_argument("checkpoint", help="the .pth file (a dict with 'params_ema')")
    p.add_argument("--out", required=True, help="new run folder to write")
    p.add_argument("--variant", choices=["bfvr", "deflicker", "deflickersd"], default=None,
                   help="which release it is (default: from its keys; deflicker and "
                        "deflickersd share a layout, so name deflickersd)")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from stc.model.authors import import_run

    prov = import_run(args.checkpoint, args.out, args.variant)
    dropped = prov["dropped_unused"]
    print(f"stc weights import: {prov['source_file']} (sha256 {prov['sha256'][:12]}...) as "
          f"{prov['variant']}: {prov['network']}; {dropped['entries']} unused entries "
          f"({dropped['parameters'] / 1e6:.2f} M parameters: s_feat_emb, t_feat_emb, "
          f"fuse_convs_dict) not carried over; run folder {args.out}", file=sys.stderr)
    curriculum = FINETUNE_CURRICULUM[prov["variant"]]
    print_next([f"stc enhance VIDEO.mp4 -o OUT.mp4 --checkpoint {args.out}",
                f"stc enhance FACE_CROPS/ -o PRED --checkpoint {args.out} --aligned",
                f"stc train stage2 --curriculum {curriculum} --init {args.out} --manifest "
                "CURATED --out RUN2   (fine-tune on your curated clips)"])
    return 0
