"""The configuration palette: every colour tells itself apart from every other."""

import itertools

import numpy as np

import charts


def cielab(hex_colour: str) -> np.ndarray:
    """sRGB (D65) to CIELAB, the standard formulas."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    f = np.where(xyz / np.array([0.95047, 1.0, 1.08883]) > 0.008856, f,
                 7.787 * xyz / np.array([0.95047, 1.0, 1.08883]) + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_cielab_matches_known_values():
    assert np.allclose(cielab("#ffffff"), [100, 0, 0], atol=0.05)
    assert np.allclose(cielab("#ff0000"), [53.24, 80.09, 67.20], atol=0.1)


def test_no_two_configuration_colours_are_close():
    closest = min((np.linalg.norm(cielab(a) - cielab(b)), a, b)
                  for a, b in itertools.combinations(charts.PALETTE, 2))
    assert closest[0] >= 30, closest
    assert len(set(charts.PALETTE)) == len(charts.PALETTE) == 20


def test_group_colours_are_fixed_by_first_position():
    colours = charts.group_colors(["a", "b", "a", "c"])
    assert list(colours) == ["a", "b", "c"]
    assert colours["a"] == charts.PALETTE[0] and colours["c"] == charts.PALETTE[2]
