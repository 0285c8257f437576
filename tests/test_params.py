"""Chapter parameters: sgdnoise.params (Param, validate, load_profile) and every chapter's
parameter files against its parameters cell."""

from __future__ import annotations

import ast

import pytest
import yaml
from conftest import BOOK, load_build_module

from sgdnoise.params import PROFILES, Param, load_profile, validate

SPEC = {
    "profile": Param("str", choices=list(PROFILES)),
    "epochs": Param("int", low=1, high=100),
    "lr": Param("float", low=0.0),
    "augment": Param("bool"),
    "batch_sizes": Param("list[int]", low=1, min_len=2),
    "widths": Param("list[float]", high=4.0),
    "norms": Param("list[str]", choices=["batch", "group", "none"]),
}
GOOD = {"profile": "smoke", "epochs": 3, "lr": 0.1, "augment": False,
        "batch_sizes": [128, 1024], "widths": [0.5, 1], "norms": ["group"]}


def test_valid_values_pass_and_are_coerced():
    checked = validate(GOOD, SPEC)
    assert checked == {**GOOD, "widths": [0.5, 1.0]}
    assert isinstance(checked["widths"][1], float)
    assert validate({**GOOD, "lr": 1}, SPEC)["lr"] == 1.0
    assert isinstance(validate({**GOOD, "lr": 1}, SPEC)["lr"], float)
    assert validate({**GOOD, "epochs": 100}, SPEC)["epochs"] == 100  # bounds are inclusive


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("profile", "huge", "one of ['smoke', 'default', 'full']"),
        ("profile", 3, "a string"),
        ("epochs", 0, ">= 1"),
        ("epochs", 101, "<= 100"),
        ("epochs", 2.5, "an integer"),
        ("epochs", True, "an integer"),
        ("epochs", "3", "an integer"),
        ("lr", -0.1, ">= 0.0"),
        ("lr", "0.1", "a number"),
        ("lr", False, "a number"),
        ("augment", 1, "true or false"),
        ("augment", "yes", "true or false"),
        ("batch_sizes", 128, "a list of int with at least 2 item(s)"),
        ("batch_sizes", [128], "a list of int with at least 2 item(s)"),
        ("widths", [1.0, 8.0], "<= 4.0"),  # a list item is reported by itself
        ("norms", ["layer"], "one of ['batch', 'group', 'none']"),
    ],
)
def test_each_bad_value_names_parameter_value_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ValueError) as info:
        validate({**GOOD, name: value}, SPEC)
    message = str(info.value)
    assert repr(name) in message or f"'{name}[" in message
    assert allowed in message
    bad_item = name in ("widths", "norms")
    assert repr(value[-1] if bad_item else value) in message


def test_list_items_are_named_by_index():
    with pytest.raises(ValueError, match=r"'batch_sizes\[1\]' must be >= 1, got 0"):
        validate({**GOOD, "batch_sizes": [4, 0]}, SPEC)


def test_unknown_and_missing_parameters_are_errors():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['lr_typo'\]") as info:
        validate({**GOOD, "lr_typo": 0.1}, SPEC)
    assert "allowed:" in str(info.value) and "'lr'" in str(info.value)
    values = dict(GOOD)
    del values["augment"]
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['augment'\]"):
        validate(values, SPEC)


def test_unknown_kind_is_reported():
    with pytest.raises(ValueError, match="unknown parameter kind 'complex'"):
        validate({"z": 1}, {"z": Param("complex")})


def test_load_profile_reads_a_flat_mapping(tmp_path):
    path = tmp_path / "smoke.yaml"
    path.write_text("profile: smoke\nepochs: 3\nbatch_sizes: [128, 1024]\n")
    assert load_profile(path) == {"profile": "smoke", "epochs": 3, "batch_sizes": [128, 1024]}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_profile(empty) == {}
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_profile(bad)


# ------------------------------------------------------------ every chapter's parameter files

_build = load_build_module()
CHAPTERS = _build.chapter_names(_build.read_toc(BOOK))


def parameters_cell(name: str) -> dict[str, object]:
    """The literal values assigned in the chapter's cell tagged 'parameters'."""
    import jupytext

    nb = jupytext.read(BOOK / _build.page_folder(name) / f"{name}.py")
    cells = [c for c in nb.cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'parameters', found {len(cells)}"
    values: dict[str, object] = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f"{name}: the parameters cell may only hold plain assignments")
        target = node.targets[0]
        assert isinstance(target, ast.Name), f"{name}: assign to plain names"
        values[target.id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_parameter_files_match_its_parameters_cell(name):
    if not (BOOK / _build.page_folder(name) / f"{name}.py").is_file():
        pytest.skip(f"book/{_build.page_folder(name)}/{name}.py is not written yet")
    cell = parameters_cell(name)
    assert cell.get("profile") == "default", f"{name}: the cell must set profile = 'default'"
    expected = set(cell) - {"profile"}
    for profile in PROFILES:
        path = BOOK / "params" / name / f"{profile}.yaml"
        assert path.is_file(), f"{name}: {path} is missing"
        values = yaml.safe_load(path.read_text()) or {}
        assert values.get("profile", profile) == profile, f"{path}: wrong profile"
        keys = set(values) - {"profile"}
        assert keys == expected, (
            f"{path}: keys differ from the parameters cell: extra {sorted(keys - expected)}, "
            f"missing {sorted(expected - keys)}")
        if profile == "default":
            differ = {k: (values[k], cell[k]) for k in expected if values[k] != cell[k]}
            assert not differ, f"{path}: values differ from the parameters cell: {differ}"


# ------------------------------------------------------------------ ChapterParams base

from dataclasses import FrozenInstanceError, dataclass  # noqa: E402

from sgdnoise.params import ChapterParams, param  # noqa: E402


@dataclass(frozen=True)
class _Demo(ChapterParams):
    n: int = param(low=2, doc="examples")
    lr: float = param(low=0.0, high=1.0)
    kind: str = param(choices=("a", "b"))
    sizes: tuple[int, ...] = param(low=1, min_len=2)

    def check(self) -> None:
        self.require(max(self.sizes) <= self.n, "sizes", f"must be <= n={self.n}")


def _demo(**kw):
    base = dict(profile="smoke", n=10, lr=0.5, kind="a", sizes=[1, 2])
    base.update(kw)
    return _Demo.from_mapping(base)


def test_chapter_params_coerces_and_freezes():
    p = _demo(lr=1)
    assert p.lr == 1.0 and isinstance(p.lr, float) and p.sizes == (1, 2)
    assert p.to_dict()["sizes"] == [1, 2]
    with pytest.raises(FrozenInstanceError):
        p.n = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        (dict(n=1), r"'n' must be >= 2, got 1"),
        (dict(lr=2.0), r"'lr' must be <= 1.0"),
        (dict(kind="c"), r"'kind' must be one of \['a', 'b'\], got 'c'"),
        (dict(sizes=[3]), r"'sizes' must be a list of int with at least 2"),
        (dict(sizes=[1, 20]), r"'sizes' = \(1, 20\): must be <= n=10"),
        (dict(profile="huge"), r"'profile' must be one of"),
        (dict(n=True), r"'n' must be an integer"),
    ],
)
def test_chapter_params_messages(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _demo(**kw)


def test_chapter_params_unknown_missing_and_namespace(tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\]"):
        _demo(bogus=1)
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['kind'\]"):
        _Demo.from_mapping(dict(profile="smoke", n=10, lr=0.5, sizes=[1, 2]))
    ns = dict(profile="default", n=4, lr=0.1, kind="b", sizes=[1, 4], other=object())
    assert _Demo.from_namespace(ns).kind == "b"
    f = tmp_path / "p.yaml"
    f.write_text("profile: smoke\nn: 10\nlr: 0.5\nkind: a\nsizes: [1, 30]\n")
    with pytest.raises(ValueError, match=r"p.yaml: parameter 'sizes'"):
        _Demo.from_yaml(f)


# ------------------------------------------- chapters that declare sgdnoise.chapters.<name>.Params

PARAMS_CLASSES = {name: _build.params_class(name) for name in CHAPTERS}


def test_chapter_list_comes_from_the_toc():
    assert CHAPTERS, "no chapters/<name> entries in book/_toc.yml"
    assert CHAPTERS == _build.chapter_names(_build.read_toc(BOOK))
    sources = sorted([p.stem for p in (BOOK / "chapters").glob("ch*.py")]
                     + [p.stem for p in (BOOK / "guide").glob("guide_*.py")])
    assert sorted(CHAPTERS) == sources, "every chapter source is in the toc, and only those"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_params_class_accepts_every_profile_and_matches_the_cell(name):
    cls = PARAMS_CLASSES[name]
    if cls is None:
        pytest.skip(f"sgdnoise.chapters.{name} has no Params class yet")
    cell = parameters_cell(name)
    assert set(cls.names()) == set(cell), (
        f"{name}: Params.names() and the parameters cell differ: only in Params "
        f"{sorted(set(cls.names()) - set(cell))}, only in the cell "
        f"{sorted(set(cell) - set(cls.names()))}")
    for profile in PROFILES:
        params = cls.from_yaml(BOOK / "params" / name / f"{profile}.yaml")
        assert params.profile == profile
    default = yaml.safe_load((BOOK / "params" / name / "default.yaml").read_text())
    assert cls.from_mapping(default) == cls.from_mapping(cell), (
        f"{name}: default.yaml and the parameters cell hold different values")


def test_build_validates_with_the_params_class_before_any_kernel(tmp_path, monkeypatch):
    """book/build.py's check_chapter refuses a value the chapter's Params class refuses."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class P(ChapterParams):
        num_draws: int = param(low=10)
        seed: int = param(low=0)

    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    (book / "params" / "chx").mkdir(parents=True)
    (book / "chapters" / "chx.py").write_text(
        '# %% tags=["parameters"]\nprofile = "default"\nnum_draws = 20\nseed = 0\n')
    pfile = book / "params" / "chx" / "smoke.yaml"
    pfile.write_text("profile: smoke\nnum_draws: 5\nseed: 0\n")
    monkeypatch.setattr(_build, "params_class", lambda name: P)
    with pytest.raises(_build.BuildError, match=r"smoke.yaml.*'num_draws' must be >= 10, got 5"):
        _build.check_chapter(book, "chx", "smoke")
    pfile.write_text("profile: smoke\nnum_draws: 50\nseed: 0\n")
    assert _build.check_chapter(book, "chx", "smoke")[1]["num_draws"] == 50


# ------------------------------------------------------------------ issue 17: refused values


@pytest.mark.parametrize("kind, value, words", [
    ("int", 10**8, ["<= 10000000", "ceiling"]),
    ("int", -(10**8), [">= -10000000"]),
    ("float", 1e12, ["<= 1000000000.0"]),
    ("float", float("nan"), ["finite"]),
    ("float", float("inf"), ["finite"]),
    ("list[int]", [1, 10**9], ["'n[1]'", "<= 10000000"]),
])
def test_numbers_without_declared_bounds_have_a_ceiling(kind, value, words):
    with pytest.raises(ValueError) as err:
        Param(kind).check("n", value)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert Param(kind, high=1e15).check("n", 1 if kind != "list[int]" else [1]) is not None


@pytest.mark.parametrize("text, words", [
    ("profile: smoke\nepochs: 3\nepochs: 4\n", ["'epochs'", "line 3", "twice"]),
    ("profile: smoke\nlr: .nan\n", ["'lr'", "line 2", "finite"]),
    ("profile: smoke\nlr: !!python/object/apply:os.system ['true']\n", ["line 2", "python"]),
    ("profile: smoke\nlr: [1, 2\n", ["line 3"]),
])
def test_load_profile_refuses_in_one_line_naming_file_and_line(tmp_path, text, words):
    path = tmp_path / "smoke.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_profile(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    for w in words:
        assert w in msg, (w, msg)
