"""A bioimage.io package built as another tool would, shared by the package and hardening tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class ForeignUNet(torch.nn.Module):
    """One pooling level, channels last in and out: (batch, y, x, channel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.down = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bottom = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        skip = torch.relu(self.down(x))
        deep = torch.relu(self.bottom(torch.nn.functional.max_pool2d(skip, 2)))
        return self.head(torch.cat([skip, self.up(deep)], 1)).permute(0, 2, 3, 1)


def zmuv(image: np.ndarray) -> np.ndarray:
    return ((image - image.mean()) / image.std()).astype(np.float32)


def foreign_package(tmp_path: Path, postprocessing: list, test_output_fn) -> Path:
    """A package built as another tool would: torchscript, byxc axes, zero-mean preprocessing."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    module = torch.jit.script(ForeignUNet().eval())
    module.save(tmp_path / "foreign.pt")
    test_input = np.random.default_rng(0).normal(50, 10, (1, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        raw = module(torch.from_numpy(zmuv(test_input))).numpy()
    np.save(tmp_path / "in.npy", test_input)
    np.save(tmp_path / "out.npy", test_output_fn(raw))
    (tmp_path / "README.md").write_text("# foreign\n")
    size = v0_5.ParameterizedSize(min=16, step=2)
    descr = v0_5.ModelDescr(
        name="foreign unet",
        description="a hand-built U-Net",
        authors=[v0_5.Author(name="someone else")],
        cite=[v0_5.CiteEntry(text="a paper", doi="10.1007/978-3-319-24574-4_28")],
        license="MIT",
        documentation=v0_5.FileDescr(source=tmp_path / "README.md"),
        inputs=[
            v0_5.InputTensorDescr(
                id="image",
                axes=[
                    v0_5.BatchAxis(),
                    *(v0_5.SpaceInputAxis(id=a, size=size) for a in "yx"),
                    v0_5.ChannelAxis(channel_names=["gray"]),
                ],
                test_tensor=v0_5.FileDescr(source=tmp_path / "in.npy"),
                preprocessing=[
                    v0_5.ZeroMeanUnitVarianceDescr(
                        kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=["y", "x"])
                    )
                ],
            )
        ],
        outputs=[
            v0_5.OutputTensorDescr(
                id="mask",
                axes=[
                    v0_5.BatchAxis(),
                    *(
                        v0_5.SpaceOutputAxisWithHalo(
                            id=a, halo=4, size=v0_5.SizeReference(tensor_id="image", axis_id=a)
                        )
                        for a in "yx"
                    ),
                    v0_5.ChannelAxis(channel_names=["foreground"]),
                ],
                test_tensor=v0_5.FileDescr(source=tmp_path / "out.npy"),
                postprocessing=postprocessing,
            )
        ],
        weights=v0_5.WeightsDescr(
            torchscript=v0_5.TorchscriptWeightsDescr(
                source=tmp_path / "foreign.pt", pytorch_version=torch.__version__.split("+")[0]
            )
        ),
    )
    return save_bioimageio_package(descr, output_path=tmp_path / "foreign.zip")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


RDF_0_4 = """format_version: 0.4.10
type: model
name: foreign unet 04
description: a hand-built U-Net in the older 0.4 format, as many zoo models are
authors: [{name: someone else}]
cite: [{text: a paper, doi: 10.1007/978-3-319-24574-4_28}]
license: MIT
documentation: README.md
timestamp: 2024-01-01T00:00:00
test_inputs: [in.npy]
test_outputs: [out.npy]
inputs:
- name: image
  axes: byxc
  data_type: float32
  data_range: [-.inf, .inf]
  shape: {min: [1, 16, 16, 1], step: [0, 2, 2, 0]}
  preprocessing: [{name: zero_mean_unit_variance, kwargs: {mode: per_sample, axes: yx}}]
outputs:
- name: mask
  axes: byxc
  data_type: float32
  data_range: [0, 1]
  shape: {reference_tensor: image, scale: [1, 1, 1, 1], offset: [0, 0, 0, 0]}
  halo: [0, 4, 4, 0]
  postprocessing: [{name: sigmoid}]
weights: {torchscript: {source: foreign.pt}}
"""
