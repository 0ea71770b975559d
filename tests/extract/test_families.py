"""The family registry (stages/extract/families.py): what reads it, the docs' tables it
generates, and a family added by a test as a new module would add one: registered,
validated, listed, computed end to end, and caught by the docs check until documented."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from family_reference import stored_and_reference
from PIL import Image

from pipeline.config import SCHEMA_VERSION
from pipeline.errors import ConfigError
from stages import cli_docs
from stages.cli import main
from stages.extract import extract_features, families
from stages.extract.config import AUDIO_FEATURES, ExtractConfig, FeatureIdentity
from stages.extract.extractors import FRAMES, Extractor, Loaded, Preprocessing, family_for
from stages.extract.families import Family, register
from stages.extract.family_listing import backbone_help, doc_tables, listing

ROOT = Path(__file__).resolve().parents[2]
# Each document -> the name of the table it holds, as `vidstore backbones --markdown` takes it.
DOCS = {"README.md": "readme", "docs/extraction.md": "extraction", "docs/architecture.md": "architecture"}


def stale_docs() -> list[str]:
    """The documents whose family table is not the registry's, as generated now."""
    tables = doc_tables()
    return [doc for doc, name in DOCS.items() if tables[name] not in (ROOT / doc).read_text()]


def test_the_docs_family_tables_are_the_registrys():
    stale = stale_docs()
    assert stale == [], "\n\n".join(
        f"{doc} lacks the registry's table; replace its family table with `make backbones MARKDOWN={DOCS[doc]}`:\n"
        f"{doc_tables()[DOCS[doc]]}"
        for doc in stale
    )


def test_every_example_names_its_own_family():
    for f in families.families():
        for example in f.examples:
            option = {f.option: example} | ({"modality": "audio"} if f.option == "audio_features" else {})
            assert family_for(ExtractConfig(**option)).family == f.name, example


@pytest.mark.parametrize(
    "backbone", ["resnet", "resnet50:x", "timm:", "timm:vit.a.b", "open_clip:ViT-B-32", "keras:resnet50"]
)
def test_a_value_of_no_familys_form_is_refused_with_every_form(backbone):
    with pytest.raises(ConfigError, match=r"^--backbone \(BACKBONE=\): .* is not a model name") as refused:
        ExtractConfig(backbone=backbone)
    assert all(f.form in str(refused.value) for f in families.families("backbone"))
    assert "torchvision:r2plus1d_18" in str(refused.value)  # each family sharing a form gives its example


def test_the_audio_feature_choices_are_the_sound_families():
    assert {f.name for f in families.families("audio_features")} == set(AUDIO_FEATURES)


def test_help_and_listing_read_the_registry():
    runner = CliRunner()
    helped = runner.invoke(main, ["features", "--help"], terminal_width=400)
    listed = runner.invoke(main, ["backbones"])
    assert helped.exit_code == 0 and listed.exit_code == 0, (helped.output, listed.output)
    for f in families.families("backbone"):
        assert f.form in helped.output and f.examples[0] in helped.output, f.name
    for f in families.families():
        assert f"{f.title}: {f.form}" in listed.output and all(e in listed.output for e in f.examples), f.name
    assert runner.invoke(main, ["backbones", "--markdown", "readme"]).output.strip() == doc_tables()["readme"]


def test_listing_and_validating_names_import_neither_timm_nor_open_clip(monkeypatch):
    for heavy in ("timm", "open_clip"):
        monkeypatch.setitem(sys.modules, heavy, None)  # `import timm` now raises ImportError
    ExtractConfig(backbone="timm:vit_small_patch14_dinov2.lvd142m")
    ExtractConfig(backbone="open_clip:ViT-B-32:openai")
    assert "timm:NAME[.TAG]" in listing() and "open_clip:ARCH:PRETRAINED" in backbone_help()


# ---------------------------------------------------------------- a family added by a test
class MeanColour(torch.nn.Module):
    """The toy model: (B, 3, S, S) -> (B, 3), each channel's mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def mean_colours(pictures: list) -> np.ndarray:
    """The toy family's reference on PIL frames: shorter side to 32 px, centre crop, channel means (n, 3)."""
    rows = []
    for p in pictures:
        scale = 32 / min(p.size)
        w, h = max(32, round(p.width * scale)), max(32, round(p.height * scale))
        left, top = (w - 32) // 2, (h - 32) // 2
        crop = p.resize((w, h), Image.BILINEAR).crop((left, top, left + 32, top + 32))
        rows.append(np.asarray(crop, np.float32).mean(axis=(0, 1)))
    return np.stack(rows)


def test_features_help_leaves_the_backbone_option_its_own_help():
    """`features --help` lists the families in --backbone's help; the option lives as long as the
    process, so its own help must be back afterwards (tests/test_options.py reads it in this process)."""
    (option,) = [o for o in cli_docs.options(("features",)) if o.name == "backbone"]
    own = option.help
    result = CliRunner().invoke(main, ["features", "--help"])
    assert result.exit_code == 0 and "timm:" in result.output
    assert option.help == own


@pytest.fixture
def toy(monkeypatch):
    """A family as a new module would write it, registered for this test only."""
    families.families()  # the real ones first, then a copy the test may add to
    monkeypatch.setattr(families, "REGISTRY", dict(families.REGISTRY))

    @register(
        Family(
            name="toy",
            title="Toy",
            form="toy:CHANNELS",
            examples=("toy:rgb",),
            help="each channel's mean colour",
            stores="the mean of each RGB channel",
            weights="",
            preprocessing="the crop as decoded, 0..255",
            batch=(64, 4),
            dim=3,
        )
    )
    class Toy(Extractor):
        modality = "rgb"
        decodes = FRAMES
        dim = 3
        item_dtype = torch.uint8
        numeric_fields = ("frames", "fps", "image_size", "backbone", "decoder")

        def item_shape(self) -> tuple[int, ...]:
            return (32, 32, 3)

        def preprocessing(self) -> Preprocessing:
            return Preprocessing(32, 32, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear")

        def resolve_weights(self, download_timeout=20.0, fallback_to_random=False):
            return None

        def identity(self, dataset, videos_sha256, sampling, weights, precision):
            return FeatureIdentity(
                SCHEMA_VERSION, dataset, videos_sha256, self.cfg.backbone, "none", sampling, 32, 32, "center", {},
                precision, self.cfg.decoder,
            )  # fmt: skip

        def load(self, weights, device, dtype) -> Loaded:
            return Loaded(MeanColour(), lambda x: x.movedim(-1, 1))

    return Toy


def test_a_family_is_one_registration(toy, cut_csv, tmp_path):
    """Validated by the config, picked by family_for, listed and in --backbone's help, its
    default batch the registered one, its set computed by the runner, and the docs check
    naming every document that lacks its row until the generated tables are pasted in."""
    with pytest.raises(ConfigError, match=r"toy:CHANNELS \(toy:rgb\)"):
        ExtractConfig(backbone="toy")
    cfg = ExtractConfig(
        backbone="toy:rgb", dataset="csv", data_dir=cut_csv, features_root=tmp_path, frames=2, device="cpu"
    )
    family = family_for(cfg)
    assert isinstance(family, toy) and family.batch_size(torch.device("cpu")) == 4
    runner = CliRunner()
    assert "Toy: toy:CHANNELS" in runner.invoke(main, ["backbones"]).output
    assert "toy:CHANNELS (toy:rgb)" in runner.invoke(main, ["features", "--help"], terminal_width=400).output

    set_dir = extract_features(cfg, quiet=True).set_dir
    assert set_dir.name.startswith("toy-rgb-none-t2-32px-")
    agreement = stored_and_reference(set_dir, lambda vid: cut_csv.parent / vid, mean_colours)
    ours, theirs = agreement.ours, agreement.theirs
    assert ours.shape == (8, 3)  # 4 clips, T=2
    # FFmpeg's and PIL's bilinear filters differ by a few grey levels, not by a channel's mean
    np.testing.assert_allclose(ours, theirs, atol=3)

    assert stale_docs() == list(DOCS)
