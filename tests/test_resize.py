"""nas.data.resize: uint8 images resized bilinear and antialiased, a chunk at a time, the same whatever the chunk."""
import torch

from nas.data.resize import resize


def images(n=10, channels=1, side=12, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=generator)


def test_no_size_or_the_same_size_leaves_the_images_as_they_are():
    x = images()
    assert resize(x, None) is x and resize(x, 12) is x and resize(x, (12, 12)) is x


def test_images_are_resized_to_a_side_or_a_shape_as_uint8():
    x = images(channels=3)
    assert resize(x, 8).shape == (10, 3, 8, 8) and resize(x, (6, 9)).shape == (10, 3, 6, 9)
    assert resize(x, 8).dtype == torch.uint8


def test_the_result_does_not_depend_on_the_chunk():
    x = images(n=11)
    assert torch.equal(resize(x, 7, chunk=3), resize(x, 7, chunk=4096))


def test_it_is_antialiased_bilinear_interpolation_rounded():
    x = images()
    expected = torch.nn.functional.interpolate(x.float(), size=(5, 5), mode="bilinear", antialias=True,
                                               align_corners=False).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(resize(x, 5), expected)
    flat = torch.full((2, 1, 12, 12), 77, dtype=torch.uint8)
    assert torch.equal(resize(flat, 30), torch.full((2, 1, 30, 30), 77, dtype=torch.uint8))  # grey stays grey
