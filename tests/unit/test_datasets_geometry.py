"""The exact circle/footprint overlap test of sky queries, against brute force on the sphere.

Footprints are image-like quadrilaterals (a rotated rectangle on the tangent plane) anywhere
on the sky, poles and the RA 0/360 line included. The brute force knows nothing of the
gnomonic trick: inside is a winding number (the angles the edges subtend at the point sum
to 2 pi), and the distance to the boundary is the least over densely sampled edge points.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from edge.services.datasets import (
    _cross,
    _dot,
    _norm,
    arc_distance,
    overlaps,
    separation,
    unit,
)
from pixfleet.registry.datasets import Vector

SAMPLES = 400  # points per edge for the brute-force distance


def _combine(*terms: tuple[float, Vector]) -> Vector:
    """The unit vector along the weighted sum of ``terms``."""
    x, y, z = (sum(w * v[i] for w, v in terms) for i in range(3))
    n = math.sqrt(x * x + y * y + z * z)
    return (x / n, y / n, z / n)


def _radec(v: Vector) -> tuple[float, float]:
    ra = math.degrees(math.atan2(v[1], v[0])) % 360.0
    return ra, math.degrees(math.asin(max(-1.0, min(1.0, v[2]))))


def _basis(c: Vector) -> tuple[Vector, Vector]:
    """East and north at ``c`` (any tangent pair at a pole)."""
    east = _cross((0.0, 0.0, 1.0), c)
    if _norm(east) < 1e-9:
        east = (0.0, 1.0, 0.0)
    east = _combine((1.0, east))
    return east, _cross(c, east)


def _offset(c: Vector, distance: float, angle: float) -> Vector:
    """The point ``distance`` degrees from ``c`` at position angle ``angle`` (degrees)."""
    e, n = _basis(c)
    d, a = math.radians(distance), math.radians(angle)
    towards = _combine((math.sin(a), e), (math.cos(a), n))
    return _combine((math.cos(d), c), (math.sin(d), towards))


def footprint(
    ra: float, dec: float, width: float, height: float, rotation: float
) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """Corners of a ``width`` x ``height`` degree image centred on (ra, dec), turned by
    ``rotation``: a rectangle on the tangent plane, mapped back by the inverse gnomonic."""
    c = unit(ra, dec)
    e, n = _basis(c)
    r = math.radians(rotation)
    corners = []
    for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        x = math.tan(math.radians(width / 2)) * sx
        y = math.tan(math.radians(height / 2)) * sy
        x, y = x * math.cos(r) - y * math.sin(r), x * math.sin(r) + y * math.cos(r)
        corners.append(_radec(_combine((1.0, c), (x, e), (y, n))))
    return corners, (ra, dec)


def _winding(p: Vector, polygon: list[Vector]) -> float:
    """The sum of the signed angles the edges subtend at ``p``, in turns."""
    total = 0.0
    for a, b in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        ta = _combine((1.0, a), (-_dot(a, p), p))  # tangent directions at p towards a, b
        tb = _combine((1.0, b), (-_dot(b, p), p))
        total += math.atan2(_dot(_cross(ta, tb), p), _dot(ta, tb))
    return total / (2 * math.pi)


def _slerp(a: Vector, b: Vector, t: float) -> Vector:
    omega = math.radians(separation(a, b))
    if omega < 1e-12:
        return a
    return _combine((math.sin((1 - t) * omega), a), (math.sin(t * omega), b))


def _boundary_distance(p: Vector, polygon: list[Vector]) -> tuple[float, float]:
    """The least sampled distance from ``p`` to the edges, and a bound on its error."""
    best, error = math.inf, 0.0
    for a, b in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        error = max(error, separation(a, b) / SAMPLES)
        for k in range(SAMPLES + 1):
            best = min(best, separation(p, _slerp(a, b, k / SAMPLES)))
    return best, error


RA = st.one_of(
    st.floats(0, 360, exclude_max=True),
    st.floats(359.0, 360, exclude_max=True),
    st.floats(0.0, 1.0),
)
DEC = st.one_of(st.floats(-90, 90), st.floats(80, 90), st.floats(-90, -80))


@settings(max_examples=300, deadline=None)
@given(
    ra=RA,
    dec=DEC,
    width=st.floats(1e-3, 20),
    height=st.floats(1e-3, 20),
    rotation=st.floats(0, 360),
    distance=st.floats(0, 40),
    angle=st.floats(0, 360),
    radius=st.floats(1e-4, 30),
)
@example(ra=0.01, dec=10, width=0.1, height=0.1, rotation=0, distance=0.06, angle=270, radius=0.01)
@example(
    ra=45, dec=89.95, width=0.2, height=0.2, rotation=0, distance=0.08, angle=180, radius=0.001
)
@example(ra=200, dec=-89.9, width=1, height=0.5, rotation=30, distance=0.5, angle=10, radius=0.05)
def test_overlap_matches_brute_force(
    ra: float,
    dec: float,
    width: float,
    height: float,
    rotation: float,
    distance: float,
    angle: float,
    radius: float,
) -> None:
    corners, centre = footprint(ra, dec, width, height, rotation)
    polygon = [unit(*v) for v in corners]
    p = _offset(unit(ra, dec), distance, angle)
    q_ra, q_dec = _radec(p)
    p = unit(q_ra, q_dec)
    nearest, error = _boundary_distance(p, polygon)
    margin = error + 1e-7
    # Too close to call by sampling: the circle grazes the boundary.
    assume(abs(nearest - radius) > margin)
    if nearest < radius:
        expected = True
    else:
        turns = _winding(p, polygon)
        assert min(abs(turns), abs(abs(turns) - 1)) < 1e-6, turns
        expected = abs(turns) > 0.5
    assert overlaps(q_ra, q_dec, radius, corners, centre) is expected


@settings(max_examples=300, deadline=None)
@given(
    ra=RA,
    dec=DEC,
    width=st.floats(1e-3, 20),
    height=st.floats(1e-3, 20),
    rotation=st.floats(0, 360),
    distance=st.floats(0, 60),
    angle=st.floats(0, 360),
    radius=st.floats(1e-4, 30),
)
def test_an_overlap_is_never_beyond_the_prefilter_bound(
    ra: float,
    dec: float,
    width: float,
    height: float,
    rotation: float,
    distance: float,
    angle: float,
    radius: float,
) -> None:
    """What the SQL prefilter keeps: centres within the query radius plus the footprint's
    radius (centre to the farthest corner)."""
    corners, centre = footprint(ra, dec, width, height, rotation)
    c = unit(*centre)
    reach = max(separation(c, unit(*v)) for v in corners)
    p = _offset(c, distance, angle)
    q_ra, q_dec = _radec(p)
    if overlaps(q_ra, q_dec, radius, corners, centre):
        assert separation(c, unit(q_ra, q_dec)) <= radius + reach + 1e-9


@given(a=st.tuples(RA, DEC), b=st.tuples(RA, DEC), p=st.tuples(RA, DEC))
@settings(max_examples=300, deadline=None)
def test_arc_distance_is_the_least_over_the_arc(
    a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]
) -> None:
    va, vb, vp = unit(*a), unit(*b), unit(*p)
    assume(separation(va, vb) < 170)  # the shorter arc is well defined
    nearest, error = _boundary_distance(vp, [va, vb])  # both ways along the same arc
    got = arc_distance(vp, va, vb)
    assert got <= nearest + 1e-9
    assert got >= nearest - error - 1e-9


def test_ra_wrap_and_poles_by_hand() -> None:
    # A field across RA 0: a circle just east of 0 and one just west of 360 both meet it.
    corners, centre = footprint(0.02, 10.0, 0.1, 0.1, 0.0)
    assert overlaps(0.06, 10.0, 0.001, corners, centre)
    assert overlaps(359.98, 10.0, 0.001, corners, centre)
    assert not overlaps(359.9, 10.0, 0.01, corners, centre)
    # A field holding the north pole: every RA near the pole is inside.
    corners, centre = footprint(45.0, 89.95, 0.2, 0.2, 0.0)
    for ra in (0.0, 90.0, 180.0, 270.0, 359.0):
        assert overlaps(ra, 89.99, 1e-4, corners, centre)
    assert not overlaps(225.0, 89.5, 0.1, corners, centre)
    # A circle around the pole meets a field below it only when it reaches it.
    corners, centre = footprint(100.0, 85.0, 1.0, 1.0, 30.0)
    assert overlaps(0.0, 90.0, 5.0, corners, centre)
    assert not overlaps(0.0, 90.0, 4.0, corners, centre)


def test_an_all_sky_footprint_is_taken_to_overlap() -> None:
    corners = [(0.0, 0.0), (120.0, 0.0), (240.0, 0.0), (0.0, 89.0)]
    assert overlaps(180.0, -60.0, 0.1, corners, (0.0, 0.0))


@pytest.mark.parametrize(("a", "b"), [((10.0, 20.0), (10.0, 20.0)), ((0.0, 90.0), (180.0, 90.0))])
def test_separation_of_a_point_with_itself_is_zero(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    assert separation(unit(*a), unit(*b)) == pytest.approx(0.0, abs=1e-12)
