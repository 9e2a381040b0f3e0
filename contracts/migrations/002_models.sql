-- Registered image-to-image ONNX models (`pixfleet models add`): the bytes live in the object
-- store under models/<name>/<sha256>.onnx; a row says how the `model` operation feeds them.
CREATE TABLE models (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    object_key    text NOT NULL,
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size          bigint NOT NULL CHECK (size > 0),
    channels      text NOT NULL CHECK (channels IN ('rgb', 'bgr', 'gray')),
    input_range   smallint NOT NULL CHECK (input_range IN (1, 255)),   -- samples 0..1 or 0..255
    mean          double precision[]                                  -- per channel, input units
                    CHECK (mean IS NULL OR cardinality(mean) IN (1, 3)),
    output_range  smallint NOT NULL CHECK (output_range IN (1, 255)),
    scale         smallint NOT NULL CHECK (scale BETWEEN 1 AND 8),    -- output side / input side
    tile          integer NOT NULL CHECK (tile = 0 OR tile BETWEEN 16 AND 4096),  -- 0: whole image
    overlap       integer NOT NULL CHECK (overlap >= 0),
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (tile = 0 OR 2 * overlap < tile)
);
