from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from npe2 import PluginManifest

from napari_unet._napari.job_widget import PLUGIN_NAME


def test_manifest_is_registered_and_every_contribution_imports(npe2pm) -> None:
    with npe2pm.tmp_plugin(package="napari-unet-segment") as plugin:
        manifest: PluginManifest = plugin.manifest
        manifest.validate_imports()
        contributions = manifest.contributions
        assert [r.command for r in contributions.readers] == ["napari-unet-segment.get_reader"]
        assert {w.display_name for w in contributions.widgets} == {"Segment", "Train"}
        assert {s.key for s in contributions.sample_data} == {"nuclei", "em"}
        assert contributions.writers[0].layer_types == ["labels"]


def test_the_plugin_is_named_after_the_distribution_not_the_taken_napari_unet() -> None:
    # "napari-unet" on the package index is another project, with its own napari_unet.
    manifest = PluginManifest.from_distribution(PLUGIN_NAME)
    assert manifest.name == PLUGIN_NAME == "napari-unet-segment"
    assert all(
        command.id.startswith(f"{PLUGIN_NAME}.") for command in manifest.contributions.commands
    )
    scripts = entry_points(group="console_scripts", name="napari-unet")
    assert [script.dist.name for script in scripts] == [PLUGIN_NAME]


def test_importing_the_package_imports_neither_napari_nor_qt_nor_torch() -> None:
    code = (
        "import sys, napari_unet; "
        "print(sorted({'napari', 'qtpy', 'PyQt6', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
