"""Every value of every shipped config says where it comes from, and the labels are true.

A label is a trailing comment on the value's line holding `[paper ...]`, `[authors FILE]` or
`[stc: reason]`. Values that name one of the authors' option files are checked against the
table of the fixture README's section 9 (read from their files), parsed here at test time,
so the configs and that table cannot drift apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {
    "stage1": "model/stage1/configs",
    "stage2": "model/stage2/configs",
    "curriculum": "model/stage2/curricula",
    "recipe": "degrade/recipes",
    "curation": "curation/configs",
}
FIXTURE_README = Path(os.environ.get("STC_AUTHORS_FIXTURE", ROOT.parent / "shared" / "fixtures"
                                     / "authors_bfvr")) / "README.md"

LABEL = re.compile(r"\[(paper [^\]]+|authors [^\]]+|stc: [^\]]+)\]")
AUTHORS_FILE = re.compile(r"\[authors ([A-Za-z0-9_.]+)")
# The files of Dixin-Lab/BFVR-STC a label may name (a typo names none of them).
AUTHORS_FILES = {
    "VQGAN_256_stage1.yml", "CodeFormer_stage2_bfvr_1.yml", "CodeFormer_stage2_bfvr_2.yml",
    "CodeFormer_stage2_deflicker.yml", "CodeFormer_stage2_deflickersd.yml",
    "vqgan3D_arch.py", "codeformer3D_arch.py", "bfvr_dataset.py", "infer_bfvr.py",
    "infer_deflicker.py", "infer_deflickersd.py",
}

# Where section 9 gives an [authors OPTIONS.yml] value, by config family and key path (list
# items as *): "row|keyword", the value being the numbers that follow the keyword's last
# occurrence in that row's cell ("keyword<": the numbers just before it; no keyword: the
# cell's first numbers). Rows not in the table are the sentences of its "Degradation
# parameters", looked up by the setting's name. None: the file sets it but the table has no
# row (the value must be empty). A tuple adds a function giving the numbers of a derived value.
ROWS = {
    "stage1": {
        "model.base_channels": "network_g|nf", "model.channel_mult": "network_g|ch_mult",
        "losses.adversarial": ("loss weights|hinge GAN", lambda v: _product_of(v, 0.5, 0.8)),
        "losses.disc_start": "loss weights|from iter", "losses.code": "loss weights|codebook loss",
        "discriminator.lr": "optimiser|D: Adam", "optim.lr": "optimiser|Adam lr",
        "optim.betas": "optimiser|betas", "optim.weight_decay": "optimiser|wd",
        "optim.grad_clip": None,
        "train.max_steps": "total_iter", "train.batch_size": "batch / GPUs",
        "train.seed": "manual_seed", "train.ema_decay": "EMA decay",
    },
    "stage2": {
        "base": "network_g",
        "transformer.layers": "network_g|layers<", "transformer.heads": "network_g|heads<",
        "transformer.width": "network_g|dim",
        "losses.feature": "loss weights|feature MSE", "losses.ce": "loss weights|CE",
        "data.size": "in_size / gt_size",
        "optim.lr": "optimiser|Adam", "optim.betas": "optimiser|betas",
        "optim.weight_decay": None, "optim.grad_clip": None,
        "optim.warmup_steps": "loss weights|warmup", "optim.decay_at": None,
        "optim.decay_steps": "schedule|MultiStepLR", "optim.decay_gamma": "schedule|γ",
        "train.max_steps": "total_iter", "train.batch_size": "batch / GPUs",
        "train.grad_accum": "batch / GPUs|×", "train.seed": "manual_seed|(train section)<",
        "train.ema_decay": "EMA decay",
    },
    "curriculum": {
        "steps.*.iterations": "total_iter",
        "steps.*.recipe": "gaussian_en / downsample_en / noise_en / ffmpeg_en",
    },
    "recipe": {
        "steps.*.bfvr.sigma": "blur_sigma", "steps.*.bfvr.kernel_size": "blur_kernel_size",
        "steps.*.bfvr.scale": "downsample_range",
        "steps.*.bfvr.noise": lambda v: "noise_range" if v[1] else (
            "gaussian_en / downsample_en / noise_en / ffmpeg_en", lambda v: [1, 1, 0, 1]),
        "steps.*.bfvr.crf": "crf_range", "steps.*.brightness.prob": "flick_probe",
        "steps.*.brightness.alpha": "flick_range",
    },
}
# A curriculum step's recipe, as the *_en flags of the option file it names.
RECIPE_FLAGS = {"bfvr-nonoise": "1/1/0/1", "bfvr": "1/1/1/1", "brightness": "0/0/0/0",
                "pixel": "0/0/0/0"}


def _product_of(value, a: float, b: float) -> list[float]:
    assert value == pytest.approx(a * b), f"{value} is not {a} x {b}"
    return [a, b]


def shipped_files() -> list[tuple[str, Path]]:
    files = [(family, p) for family, d in SHIPPED.items() for p in sorted((ROOT / d).glob("*.yaml"))]
    assert files and all(family in {f for f, _ in files} for family in SHIPPED)
    return files


def leaves(node: yaml.Node, path: tuple[str, ...] = ()):
    """(key path, node) of every value: scalars, and sequences of scalars (one value)."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield from leaves(v, path + (k.value,))
    elif isinstance(node, yaml.SequenceNode) and any(
            not isinstance(v, yaml.ScalarNode) for v in node.value):
        for v in node.value:
            yield from leaves(v, path + ("*",))
    else:
        yield path, node


def comment_after(lines: list[str], node: yaml.Node) -> str:
    """The comment that follows `node` on the line where it ends."""
    rest = lines[node.end_mark.line][node.end_mark.column:]
    return rest.split("#", 1)[1] if "#" in rest else ""


def labelled_values(path: Path):
    """[(dotted key path, Python value, comment, line number)] of one YAML file."""
    text = path.read_text()
    lines = text.splitlines() + [""]
    root = yaml.compose(text)
    out = []
    for keys, node in leaves(root):
        value = yaml.safe_load(yaml.serialize(node))
        out.append((".".join(keys), value, comment_after(lines, node), node.end_mark.line + 1))
    return out


@pytest.mark.parametrize("family,path", shipped_files(),
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_every_value_has_a_label(family: str, path: Path):
    rows = labelled_values(path)
    assert rows, f"{path}: no values"
    missing = [f"{path.relative_to(ROOT)}:{line} {key}" for key, _, c, line in rows
               if not LABEL.search(c)]
    assert not missing, ("values without a [paper ...], [authors FILE] or [stc: reason] "
                         "label:\n  " + "\n  ".join(missing))
    lines = [line for *_, line in rows]
    shared = sorted({n for n in lines if lines.count(n) > 1})
    assert not shared, f"{path}: lines {shared} hold several values under one label"
    for key, _, comment, line in rows:
        for name in AUTHORS_FILE.findall(comment):
            assert name in AUTHORS_FILES, f"{path}:{line} {key}: [authors {name}] is no file of theirs"


# ---- section 9 of the fixture README -------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?")


def numbers(text: str) -> list[float]:
    return [float(n) for n in NUMBER.findall(text.replace("**", ""))]


def cell_numbers(cell: str, keyword: str, count: int) -> list[float]:
    """The `count` numbers after the last `keyword` in `cell` (before it: `keyword<`)."""
    cell = cell.replace("**", "")
    if not keyword:
        return numbers(cell)[:count]
    before = keyword.endswith("<")
    keyword = keyword.rstrip("<")
    at = cell.rfind(keyword)
    if at < 0:
        return []
    return numbers(cell[:at])[-count:] if before else numbers(cell[at + len(keyword):])[:count]


def section9(readme: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """({option file: {setting: cell}}, {degradation setting: its sentence}) of section 9,
    with the "same as ..." cells resolved to the cell they refer to (plus their own text)."""
    text = readme.read_text()
    start = text.index("## 9.")
    body = text[start:]
    table = [ln for ln in body.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    header, rows = split[0], [r for r in split[2:] if len(r) == len(split[0])]
    files = header[1:]
    cells: dict[str, dict[str, str]] = {f: {} for f in files}
    for row in rows:
        setting = row[0]
        for i, f in enumerate(files):
            cell = row[1 + i]
            if cell.startswith("same"):
                ref = re.match(r"same as (\S+)", cell)
                j = next(k for k, g in enumerate(files) if ref.group(1) in g) if ref else i - 1
                cell = cells[files[j]][setting] + " " + cell
            cells[f][setting] = cell
    degradation = body[body.index("**Degradation parameters.**"):]
    degradation = degradation[:degradation.index("How the `*_en`")]
    sentences = {}
    for bullet in re.findall(r"^- (.+)$", degradation, re.M):
        for part in bullet.split(";"):
            for name in re.findall(r"\b([a-z]+(?:_[a-z]+)+)\b", part):
                sentences.setdefault(name, part)
    return cells, sentences


@pytest.fixture(scope="module")
def table():
    if not FIXTURE_README.exists():
        pytest.skip(f"the authors' fixture README is absent ({FIXTURE_README})")
    return section9(FIXTURE_README)


def test_section9_parses(table):
    cells, sentences = table
    assert set(cells) == {"VQGAN_256_stage1.yml", "CodeFormer_stage2_bfvr_1.yml",
                          "CodeFormer_stage2_bfvr_2.yml", "CodeFormer_stage2_deflicker.yml",
                          "CodeFormer_stage2_deflickersd.yml"}
    assert "4 heads" in cells["CodeFormer_stage2_deflickersd.yml"]["network_g"]
    assert numbers(cells["CodeFormer_stage2_bfvr_1.yml"]["optimiser"]) == [2e-5, 0.9, 0.99]
    assert 11.0 in numbers(sentences["blur_kernel_size"])


def _value_numbers(value) -> list[float]:
    items = value if isinstance(value, list) else [value]
    return [float(v) for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


@pytest.mark.parametrize("family,path", [fp for fp in shipped_files() if fp[0] in ROWS],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_authors_labels_agree_with_section9(table, family: str, path: Path):
    cells, sentences = table
    checked = 0
    for key, value, comment, line in labelled_values(path):
        for name in AUTHORS_FILE.findall(comment):
            if name not in cells:
                continue            # an arch, data or script file: not in the table
            where = f"{path.relative_to(ROOT)}:{line} {key} = {value!r} [authors {name}]"
            assert key in ROWS[family], (f"{where}: the test does not know which row of "
                                         "section 9 holds this; add it to ROWS")
            row = ROWS[family][key]
            if row is None:
                assert value in (None, [], 0), f"{where}: section 9 gives no value for it"
                continue
            derive = None
            if callable(row):
                row = row(value)
            if isinstance(row, tuple):
                row, derive = row
            row, _, keyword = row.partition("|")
            if row in cells[name]:
                cell = cells[name][row]
            else:
                cell, keyword = sentences.get(row), keyword or row
            assert cell is not None, f"{where}: section 9 has no {row!r}"
            if family == "curriculum" and key.endswith("recipe"):
                assert RECIPE_FLAGS[value] in cell.replace("**", ""), \
                    f"{where}: recipe {value} is not {name}'s *_en flags ({cell})"
            want = list(derive(value)) if derive else _value_numbers(value)
            got = cell_numbers(cell, keyword, len(want))
            assert got == pytest.approx(want), \
                f"{where}: section 9's {row!r} ({keyword or 'first'}) gives {got}: {cell!r}"
            checked += 1
    if path.stem in {"stage1", "stage2", "stage2-deflicker", "bfvr", "brightness"}:
        assert checked >= 2, f"{path}: a preset named after the authors' files checks nothing"


def test_paper_presets_follow_the_authors_where_the_paper_is_silent(table):
    """The paper-size presets carry the authors' numbers, not stc's earlier ones."""
    from stc.degrade.recipe import load_recipe
    from stc.model.stage1.config import load_stage1_config
    from stc.model.stage2.config import load_stage2_config

    cells, sentences = table
    s1, s2 = load_stage1_config("stage1"), load_stage2_config("stage2")
    assert s1.train.ema_decay == s2.train.ema_decay == 0.995
    assert s1.losses.disc_start == 2001 and s2.losses.feature == 10.0 and s2.losses.ce == 1.0
    assert load_stage2_config("stage2-deflicker").losses.ce == 0.5
    assert 0.5 in numbers(cells["CodeFormer_stage2_deflicker.yml"]["loss weights"])
    bfvr = load_recipe("bfvr").steps[0].bfvr
    assert bfvr.kernel_size in numbers(sentences["blur_kernel_size"])
    assert load_recipe("bfvr-nonoise").steps[0].bfvr.noise == (0.0, 0.0)
