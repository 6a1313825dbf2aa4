"""Every `effdet-rt ...` command line shown in README.md and docs/*.md, as the tests parse and run it.

Commands come from fenced ```bash blocks; a backslash joins continuation lines, a trailing `# comment` is dropped,
`VAR=value` prefixes become environment variables, `> file` sends stdout to a file, `$KEY` is the test key.
A synopsis line (docs/classification.md's overview: `[optional]` groups, `a|b` alternatives, `...`) stands for
two command lines: without its optional groups, and with every group (first alternative, `...` dropped).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SYNOPSIS_NUMBERS = {"N": "2"}  # a synopsis' numeric placeholders (`--batch-size N`)
PROGRAM = re.compile(r"(?:^|&&\s*|\s)(?:\S*/)?effdet-rt\s+(.*)$")


@dataclass(frozen=True)
class DocCommand:
    page: str  # README.md, docs/export.md, ...
    line: int  # 1-based line of the command's first line
    text: str  # as shown (continuations joined)
    argv: tuple[str, ...]  # after `effdet-rt`
    env: dict[str, str] = field(default_factory=dict)
    stdout: str | None = None  # `> file`
    variant: int = 0  # a synopsis: 0 without its optional groups, 1 with them
    variants: int = 1

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}" + (f"/{('bare', 'full')[self.variant]}" if self.variants > 1 else "")


def _blocks(text: str):
    """(first line number, block text) of every ```bash block."""
    for match in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
        yield text.count("\n", 0, match.start(1)) + 1, match.group(1)


def _logical_lines(start: int, block: str):
    lines = block.split("\n")
    i = 0
    while i < len(lines):
        first, text = start + i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        yield first, text
        i += 1


def _strip_comment(text: str) -> str:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        list(lexer)
    except ValueError:
        return text
    # shlex drops the comment; find where it started outside quotes
    quote = None
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index].rstrip()
    return text


def _synopsis_variants(text: str) -> list[str]:
    if not re.search(r"\[|\.\.\.|\w\|\w", text):
        return [text]
    bare = re.sub(r"\s*\[[^\]]*\]", "", text)
    full = re.sub(r"\[([^\]]*)\]", r"\1", text).replace("...", "")
    first = lambda s: re.sub(r"(\S+?)\|\S+", r"\1", s)  # noqa: E731 - a|b|c -> a
    return [first(bare), first(full)]


def documented_commands(key: str = "KEY") -> list[DocCommand]:
    found: list[DocCommand] = []
    for page in PAGES:
        name = page.relative_to(REPO).as_posix()
        for start, block in _blocks(page.read_text(encoding="utf-8")):
            for line, raw in _logical_lines(start, block):
                text = _strip_comment(raw.strip())
                if text.startswith("#") or "effdet-rt" not in text:
                    continue
                match = PROGRAM.search(text)
                if match is None:
                    continue
                env = dict(re.findall(r"(\w+)='([^']*)'", text[:match.start()])) if "=" in text[:match.start()] else {}
                variants = _synopsis_variants(match.group(1))
                for index, variant in enumerate(variants):
                    words = shlex.split(variant.replace("$KEY", key))
                    if len(variants) > 1:
                        words = [SYNOPSIS_NUMBERS.get(word, word) for word in words]
                    stdout = None
                    if ">" in words:
                        at = words.index(">")
                        words, stdout = words[:at], words[at + 1]
                    found.append(DocCommand(name, line, text, tuple(words), env, stdout, index, len(variants)))
    return found


def parse_check(argv: tuple[str, ...]) -> str:
    """Parse ``argv`` as the CLI would (TAO's --log_file split off first), without running it: returns the command
    path; raises (Typer's click) UsageError / BadParameter when an option or argument no longer parses."""
    import typer

    from effdet_rt.cli.main import app, split_log_file

    args, _ = split_log_file(list(argv))
    command = typer.main.get_command(app)
    ctx = command.make_context("effdet-rt", list(args))
    path = []
    while getattr(command, "commands", None) is not None:
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return " ".join(path)


# ---- running them: a workspace standing for the user's files -------------------------------------------------

MINI_VOC_IMAGES = {"train": 8, "val": 4}  # 8: docs/int8-cpu.md calibrates in batches of 8  # BCCD images per split in mydata/VOC


def mini_voc(bccd_root: Path, root: Path) -> Path:
    """A Pascal VOC folder holding the first BCCD images of each split (links, not copies)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, count in MINI_VOC_IMAGES.items():
        names = (bccd_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:count]
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            for sub, suffix in (("Annotations", ".xml"), ("JPEGImages", ".jpg")):
                target = root / sub / f"{name}{suffix}"
                if not target.exists():
                    target.symlink_to(bccd_root / sub / f"{name}{suffix}")
    return root


def tiny_spec_edits(tfrecords: str, val_json: str, key: str) -> dict:
    """README step 2's edits (the fields its table lists), for the tests' tiny D0 and a few images."""
    return {
        "dataset": {"num_classes": 4, "train_tfrecords": [f"{tfrecords}/train-*"],
                    "val_tfrecords": [f"{tfrecords}/val-*"], "val_json_file": val_json},
        "model": {"name": "efficientdet-d0", "input_width": 128, "input_height": 128},
        # fine-tuned from the tiny checkpoint at a rate that keeps it: two steps from random weights leave a network
        # whose scores are all 0, and `export --verify` rightly refuses to pass a model with nothing to compare
        "train": {"num_examples_per_epoch": 4, "num_epochs": 1, "batch_size": 2, "checkpoint_interval": 1,
                  "image_preview": False, "checkpoint": "tiny.edrt",
                  "lr_schedule": {"learning_rate": 1e-6, "warmup_epoch": 0}},
        "evaluate": {"num_samples": 4, "batch_size": 4, "label_map": f"{tfrecords}/label_map.yaml"},
        "inference": {"label_map": f"{tfrecords}/label_map.yaml"},
        "encryption_key": key,
        "results_dir": "results",
    }


def merged(base: dict, edits: dict) -> dict:
    out = dict(base)
    for name, value in edits.items():
        out[name] = merged(base.get(name, {}), value) if isinstance(value, dict) else value
    return out


CHECKPOINT = re.compile(r"^(results|retrained)/efficientdet-d0_\d+\.edrt$")


def stand_ins(command: DocCommand, workspace: Path, checkpoint: Path, export) -> None:
    """Before a command runs, the files its page takes as given: a trained checkpoint a page names
    (`results/efficientdet-d0_050.edrt`: the newest one a command of the page wrote in that folder, else the tests'
    tiny checkpoint) and an exported `model.onnx` on pages that start from one (``export(path)`` writes it)."""
    import shutil

    for word in command.argv:
        path = workspace / word
        if CHECKPOINT.match(word) and not path.exists():
            written = sorted(path.parent.glob("efficientdet-d0_*.edrt"))
            path.parent.mkdir(exist_ok=True)
            shutil.copy(written[-1] if written else checkpoint, path)
        if word == "model.onnx" and command.argv[0] != "export" and not path.exists():
            export(path)
