"""The cone route of `slp.insens`: exact Jacobian columns restricted to each input
element's cone (the window of each layer that it reaches), for conv/pool nets.

Three rooms:

- `geometry` (static: from the program and shapes alone): the spatial input axes, the
  geometry of every value (where its elements sit relative to the input), the block layout
  (`cone_geometry` -> `ConeGeometry`, or a `ConeRefusal` naming the operation the route does
  not take).
- `tangents` (traced): `norms` runs one scan step per block of input elements, walking the
  same operations with the block's cone tangents.
- `rules` and `windows`: each primitive's part, a `ConeRule` (how it changes the geometry and
  the tangents), named in the primitive registry (`slp._src.primitives`, the ``cone``
  field); a primitive the route does not take holds a `slp._src.interpreter.Refusal` there.
"""

from slp._src.cone.geometry import (
    ChannelCarry,
    ConeGeometry,
    ConeRefusal,
    ConeRule,
    GeometryCarry,
    cone_geometry,
)
from slp._src.cone.rules import (
    ADD,
    BROADCAST,
    CONCATENATE,
    DIVIDE,
    IDENTITY,
    NEG,
    REDUCE_SUM,
    RELU,
    SCALE,
    SHAPE,
    SPLIT,
    STACK,
    SUB,
    TILE,
    TRANSPOSE,
)
from slp._src.cone.tangents import Prepare, norms
from slp._src.cone.windows import (
    CHANNEL_DOT,
    CONV,
    GATHER,
    MAX_POOL,
    PAD,
    REV,
    SLICE,
    WINDOW_SUM,
)

__all__ = [
    "Prepare",
    "ChannelCarry",
    "ConeGeometry",
    "ConeRefusal",
    "ConeRule",
    "GeometryCarry",
    "cone_geometry",
    "norms",
    "ADD",
    "BROADCAST",
    "CHANNEL_DOT",
    "CONCATENATE",
    "CONV",
    "DIVIDE",
    "GATHER",
    "IDENTITY",
    "MAX_POOL",
    "NEG",
    "REDUCE_SUM",
    "PAD",
    "RELU",
    "REV",
    "SCALE",
    "SHAPE",
    "SLICE",
    "SPLIT",
    "STACK",
    "SUB",
    "TILE",
    "TRANSPOSE",
    "WINDOW_SUM",
]
