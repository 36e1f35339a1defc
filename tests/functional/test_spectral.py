import pytest
import torch

from omnifm.functional import amplitude_spectrum, low_pass


def test_amplitude_invariant_to_circular_shift_and_intensity_scale() -> None:
    # Prepare
    x = torch.rand(2, 3, 24, 20, dtype=torch.float64)
    # Execute
    base = amplitude_spectrum(x)
    shifted = amplitude_spectrum(torch.roll(x, shifts=(5, -7), dims=(-2, -1)))
    scaled = amplitude_spectrum(x * 37.5)
    # Assert
    assert base.shape == (2, 24, 20)
    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled, base, atol=1e-5, rtol=1e-5)


def test_amplitude_is_centred_and_channel_averaged() -> None:
    x = torch.rand(1, 1, 16, 16)
    spec = amplitude_spectrum(x)
    assert spec[0].argmax() == 8 * 16 + 8  # DC sits at the centre after fftshift
    rgb = amplitude_spectrum(x.repeat(1, 3, 1, 1))
    torch.testing.assert_close(rgb, spec)  # grey as RGB gives the grey spectrum


def test_amplitude_3d_volume() -> None:
    x = torch.rand(2, 1, 8, 10, 12)
    spec = amplitude_spectrum(x, spatial_dims=3)
    assert spec.shape == (2, 8, 10, 12)
    torch.testing.assert_close(
        amplitude_spectrum(torch.roll(x, 3, dims=-3), spatial_dims=3), spec, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("shape", [(16, 16), (33, 48), (128, 97)])
def test_low_pass_window_shape_independent_of_input_size(shape: tuple[int, int]) -> None:
    spec = amplitude_spectrum(torch.rand(2, 1, *shape))
    window = low_pass(spec, 8)
    assert window.shape == (2, 8, 8)
    # the window is centred on DC
    assert window[0].argmax() == 4 * 8 + 4


def test_low_pass_3d_and_errors() -> None:
    spec = amplitude_spectrum(torch.rand(1, 1, 9, 10, 11), spatial_dims=3)
    assert low_pass(spec, 4, spatial_dims=3).shape == (1, 4, 4, 4)
    assert low_pass(spec, (3, 4, 5)).shape == (1, 3, 4, 5)
    with pytest.raises(ValueError, match="low_pass_size"):
        low_pass(spec, 12, spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        amplitude_spectrum(torch.rand(1, 8, 8))
