"""``audet convert METHOD SRC --out DST``: the authors' original checkpoints -> audet checkpoints."""
from __future__ import annotations

HELP = "convert an original (authors') checkpoint to an audet checkpoint"
DESCRIPTION = """Convert an original checkpoint into an audet checkpoint (DST.safetensors + DST.json).

METHOD picks the converter (ac2d: the net_<epoch>.pth files of github.com/ZhiwenShao/AC2D, either
the {'model', 'K_data', 'V_data', 'P_data'} dict or a bare state_dict; cisnet: final_model.pt of
github.com/chen-yingjie/CIS with its subject dictionary, or a bare epoch<N>_model.pt together with
--subjects (the training subjects, which such a file does not hold; ResNet-18/34/50 encoders only);
aunet: the AU-Net predictor file (103 entries: AU-TDN; 83: AU-FAN), with --vae for its label VAE
and --fan-weights for the frozen face-alignment network the converted model will load,
docs/models/aunet.md). The converted model evaluates with the papers' settings; --as-published
uses the authors' test scripts' instead (aunet: flip averaging; cisnet: no subject dictionary;
ac2d: the same either way). Names are mapped by rule
and every shape is checked; a checkpoint of another model or AU count is refused with the
missing / unexpected / mis-shaped tensors named. Files are read with torch.load(weights_only=True);
numpy arrays inside are allowed, nothing else is unpickled.

examples:
  audet convert ac2d net_20.pth --out models/ac2d_bp4d_f3 --aus BP4D
  audet convert ac2d disfa/net_20.pth --out models/ac2d_disfa --aus DISFA
  audet convert cisnet work_dir/1/final_model.pt --out models/cisnet_bp4d_f1 --aus BP4D
  audet convert cisnet work_dir/1/epoch15_model.pt --subjects train_subjects.txt --out models/cisnet_e15 --aus BP4D
  audet convert aunet predictor.pth --vae vae_50.pth --fan-weights 2DFAN4.pth --out models/aunet_bp4d --aus BP4D
"""


def add_arguments(p) -> None:
    # No import of audet.models here: building the parser must stay fast (it loads timm).
    p.add_argument("method", help="which original implementation (ac2d, cisnet, aunet)")
    p.add_argument("src", help="the original checkpoint file")
    p.add_argument("--out", required=True, help="output path without suffix (writes .safetensors and .json)")
    from audet.commands._common import add_aus

    add_aus(p, "the AUs of the checkpoint's branches, in branch order")
    p.add_argument("--model", default=None, help="audet registry name (default: ac2d, or ac2d_av without causal layers)")
    p.add_argument(
        "--confounder-scale", choices=("code", "paper"), default="code",
        help="code (default): keep V_data = K_data/N as the authors' forward uses it; paper: V = K (Eq. 13)",
    )
    p.add_argument(
        "--prototype", choices=("epoch_stale", "batch", "epoch"), default="epoch_stale",
        help="prototype mode recorded for further training (default epoch_stale, as the checkpoint was trained)",
    )
    p.add_argument("--vae", metavar="FILE", default=None,
                   help="aunet only: the authors' label-VAE file (vae_<epochs>.pth); without it an AU-Net "
                        "predictor converts to aunet_tdn / aunet_fan")
    p.add_argument("--subjects", metavar="FILE|LIST", default=None,
                   help="cisnet only: the training subjects (dictionary rows), a file with one id per line or a "
                        "comma list; required for a bare epoch<N>_model.pt, optional names for final_model.pt rows")
    p.add_argument("--as-published", action="store_true",
                   help="evaluate as the authors' test script does (aunet: mean of the logits of the frames and their "
                        "flip; cisnet: without the subject dictionary); default: the paper's evaluation")
    p.add_argument("--fan-weights", metavar="FILE", default=None,
                   help="aunet only: the face-alignment network's weights (2DFAN .pth/.pth.tar or the AU-Net "
                        "authors' file), recorded in the checkpoint and loaded whenever it is used")


def _torch_file_problem(path) -> str | None:
    """Why ``path`` cannot be a torch.save file (None if it may be one): checked before torch reads it."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # zip (torch >= 1.6) or a legacy pickle
        return None
    try:
        head.decode("utf-8")
        return "it is a text file"
    except UnicodeDecodeError:
        return "neither a zip archive nor a pickle: damaged, or another kind of file"


def _one_line(path, exc: Exception) -> str:
    """The converter's error without torch's advice to unpickle arbitrary objects (never do that)."""
    text = " ".join(str(exc).split())
    if "weights_only" in text or "Weights only load failed" in text or "Unsupported operand" in text:
        return (f"{path}: cannot be read with torch.load(weights_only=True): it is damaged or holds objects "
                "other than tensors and numpy arrays (audet never unpickles those); give the authors' net_<epoch>.pth "
                "(a state_dict or their {'model', 'K_data', ...} dict)")
    return text


def run(args) -> int:
    from pathlib import Path

    from audet.commands._common import UsageError, parse_aus
    from audet.models.convert import CONVERTERS
    from audet.models.convert.ac2d import save_converted

    if args.method not in CONVERTERS:
        raise UsageError(f"no converter for {args.method!r}; available: {', '.join(sorted(CONVERTERS))}")
    aus = parse_aus(args.aus)
    src = Path(args.src)
    if not src.is_file():
        raise FileNotFoundError(f"{args.src}: no such file; give the authors' checkpoint (e.g. net_20.pth)")
    problem = _torch_file_problem(src)
    if problem:
        raise UsageError(f"{args.src}: not a PyTorch checkpoint ({problem}); give the authors' net_<epoch>.pth")
    extra = {}
    for flag, key in (("--vae", "vae"), ("--fan-weights", "fan_weights")):
        value = getattr(args, key, None)
        if value is None:
            continue
        if args.method != "aunet":
            raise UsageError(f"{flag} is an option of `audet convert aunet`, not of {args.method}")
        if not Path(value).is_file():
            raise UsageError(f"{flag} {value}: no such file")
        if key == "vae" and (why := _torch_file_problem(value)):
            raise UsageError(f"--vae {value}: not a PyTorch checkpoint ({why}); give the authors' vae_<epochs>.pth")
        extra[key] = str(value)
    if getattr(args, "subjects", None) is not None:
        if args.method != "cisnet":
            raise UsageError(f"--subjects is an option of `audet convert cisnet`, not of {args.method}")
        extra["subjects"] = _subject_list(args.subjects)
    if getattr(args, "as_published", False):
        extra["as_published"] = True
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol")  # torch's note, not ours
            model = CONVERTERS[args.method](
                args.src, aus, model_name=args.model, confounder_scale=args.confounder_scale,
                prototype=args.prototype, **extra,
            )
    except ValueError as exc:  # ConversionError and friends
        raise UsageError(_one_line(args.src, exc)) from None
    weights, meta = save_converted(model, args.out)
    rep = getattr(model, "conversion_report", {})
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.src} -> {weights} (+ {meta.name})")
    print(f"model {model.model_name}: {model.num_aus} AUs {list(model.aus or [])}, {n:,} parameters, "
          f"{rep.get('tensors', '?')} tensors mapped")
    if rep.get("summary"):  # each converter's own one-line summary (prototypes, dictionary, predictor)
        print(rep["summary"])
    return 0


def _subject_list(value: str) -> list[str]:
    """``--subjects``: a file with one id per line (blank lines and ``#`` comments skipped) or a comma list."""
    from pathlib import Path

    from audet.commands._common import UsageError

    p = Path(value)
    if p.is_file():
        items = [ln.split("#", 1)[0].strip() for ln in p.read_text().splitlines()]
    elif "," in value or (value.strip() and not any(c in value for c in "/\\")):
        items = [s.strip() for s in value.split(",")]
    else:
        raise UsageError(f"--subjects {value}: no such file (give a file with one subject id per line, or a comma list)")
    items = [s for s in items if s]
    if not items:
        raise UsageError(f"--subjects {value}: no subject ids")
    if len(set(items)) != len(items):
        raise UsageError(f"--subjects {value}: repeated subject ids")
    return items
