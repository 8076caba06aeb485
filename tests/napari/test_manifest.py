from __future__ import annotations

import subprocess
import sys

from npe2 import PluginManifest


def test_manifest_is_registered_and_every_contribution_imports(npe2pm) -> None:
    with npe2pm.tmp_plugin(package="napari-unet-segment") as plugin:
        manifest: PluginManifest = plugin.manifest
        manifest.validate_imports()
        contributions = manifest.contributions
        assert [r.command for r in contributions.readers] == ["napari-unet-segment.get_reader"]
        assert {w.display_name for w in contributions.widgets} == {"Segment", "Train"}
        assert {s.key for s in contributions.sample_data} == {"nuclei", "em"}
        assert contributions.writers[0].layer_types == ["labels"]


def test_importing_the_package_imports_neither_napari_nor_qt_nor_torch() -> None:
    code = (
        "import sys, napari_unet; "
        "print(sorted({'napari', 'qtpy', 'PyQt6', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
