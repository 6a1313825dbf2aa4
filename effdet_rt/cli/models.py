"""`effdet-rt models`: every EfficientDet variant (D0..D7x, Lite0..Lite4 / Lite3x) with its input size, parameters and
multiply-adds."""

from __future__ import annotations

import typer

from effdet_rt.cli.common import option
from effdet_rt.errors import UserError

FLOPS_HELP = "Also show multiply-adds at batch 1 (automl's FLOPs: tfprof float_ops / 2)."
BUILD_HELP = (
    "Build every network and count it (minutes for all models) instead of reading the counts from "
    "effdet_rt/model/cost_table.py, which tests check against built networks. With --flops each network is traced "
    "at the two smallest allowed input sizes and the count extended linearly in H*W to the native size."
)


def _selected_models(names: list[str] | None) -> list[str]:
    from effdet_rt.model.configs import MODEL_NAMES, get_config

    return [get_config(n).name for n in names] if names else list(MODEL_NAMES)


def _tabled_rows(names: list[str], num_classes: int, with_flops: bool) -> list[tuple[str, ...]]:
    from effdet_rt.model.configs import get_config
    from effdet_rt.model.cost_table import tabled_cost

    rows = []
    for name in names:
        cost = tabled_cost(name, num_classes)
        flops = f"{cost.multiply_adds / 1e9:.3f}" if with_flops else "-"
        rows.append(_row(get_config(name), cost.trainable_params, flops))
    return rows


def _row(cfg, params: int, flops: str) -> tuple[str, ...]:
    return (cfg.name, f"{cfg.image_size}x{cfg.image_size}", cfg.backbone, f"{cfg.fpn_num_filters} x {cfg.fpn_cell_repeats}",
            f"P{cfg.min_level}-P{cfg.max_level}", f"{params:,}", flops)


def _built_rows(names: list[str], num_classes: int, with_flops: bool) -> list[tuple[str, ...]]:
    import tf_keras as keras

    from effdet_rt.model.configs import get_config
    from effdet_rt.model.efficientdet import build_efficientdet
    from effdet_rt.model.flops import detector_cost
    from effdet_rt.utils.status import track

    rows = []
    label = "counting parameters" + (" and FLOPs" if with_flops else "")
    for name in track(names, label, total=len(names)):
        cfg = get_config(name)
        if with_flops:
            cost = detector_cost(name, num_classes)
            params, flops = cost.trainable_params, f"{cost.multiply_adds / 1e9:.3f}"
        else:
            side = 2**cfg.max_level
            model = build_efficientdet(name, num_classes, (side, side))
            params, flops = sum(int(w.shape.num_elements()) for w in model.trainable_weights), "-"
        keras.backend.clear_session()
        rows.append(_row(cfg, params, flops))
    return rows


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        num_classes: int = option(90, "-n", "--num-classes", help="Real classes (no background)."),
        model: list[str] = option(
            None, "-m", "--model", help="Only these models (repeat the option); default: all of D0..D7x and Lite0..Lite4 / Lite3x."
        ),
        flops: bool = option(True, "--flops/--no-flops", help=FLOPS_HELP),
        build: bool = option(False, "--build", help=BUILD_HELP),
    ) -> None:
        """List EfficientDet D0..D7x and Lite0..Lite4 / Lite3x: input size, backbone, BiFPN, trainable parameters and GFLOPs."""
        if num_classes < 1:
            raise UserError(f"--num-classes {num_classes} is not allowed: give the number of real classes (>= 1)")
        names = _selected_models(model)
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"EfficientDet models ({num_classes} classes)")
        for column in ("model", "input", "backbone", "BiFPN ch x cells", "levels", "trainable params", "GFLOPs"):
            table.add_column(column, justify="right" if column in ("trainable params", "GFLOPs") else "left")
        rows = (_built_rows if build else _tabled_rows)(names, num_classes, flops)
        for row in rows:
            table.add_row(*row)
        Console(width=120).print(table)
