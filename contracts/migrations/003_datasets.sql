-- The dataset catalogue (the SODA ID). Public datasets (owner IS NULL) are FITS files an
-- operator registered (`pixfleet datasets add`; bytes under datasets/<sha256>); owned ones are
-- users' FITS uploads, recorded by the `catalogue` operation (bytes: the upload's own object).
-- A record of an upload goes with the upload's row (ON DELETE CASCADE when the sweeper removes
-- it); between its expiry and the sweep, queries skip it (expires_at, copied from the upload).
CREATE TABLE datasets (
    id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][!-~]*$' AND length(id) <= 256),
    owner        text,
    upload_id    uuid REFERENCES uploads (id) ON DELETE CASCADE,
    object_key   text NOT NULL,
    media_type   text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    hdus         jsonb NOT NULL,                 -- [{index, name, type, shape, bitpix}]
    shape        integer[] NOT NULL,             -- the science plane, numpy order
    bands        jsonb NOT NULL DEFAULT '[]',    -- [{hdu, keyword, name, wavelength, low, high}]
    wcs          jsonb,                          -- the celestial WCS summary
    footprint    jsonb,                          -- [[ra, dec], ...] the corners, degrees
    centre_ra    double precision CHECK (centre_ra >= 0 AND centre_ra < 360),
    centre_dec   double precision CHECK (centre_dec BETWEEN -90 AND 90),
    radius       double precision CHECK (radius BETWEEN 0 AND 180),  -- centre to farthest corner
    -- The centre as a unit vector: cos(separation from q) = x*qx + y*qy + z*qz, which has no
    -- RA wrap and no trouble at the poles.
    x            double precision
                   GENERATED ALWAYS AS (cos(radians(centre_dec)) * cos(radians(centre_ra))) STORED,
    y            double precision
                   GENERATED ALWAYS AS (cos(radians(centre_dec)) * sin(radians(centre_ra))) STORED,
    z            double precision GENERATED ALWAYS AS (sin(radians(centre_dec))) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,    -- the upload's (which never changes); NULL for registered ones
    CHECK (upload_id IS NULL OR owner IS NOT NULL),
    CHECK (upload_id IS NOT NULL OR expires_at IS NULL),
    CHECK (num_nulls(footprint, centre_ra, centre_dec, radius) IN (0, 4))
);
CREATE INDEX datasets_owner ON datasets (owner, id);
CREATE INDEX datasets_upload ON datasets (upload_id) WHERE upload_id IS NOT NULL;
CREATE INDEX datasets_object ON datasets (object_key);
-- The sky prefilter: the centre lies within (query radius + the largest radius) in declination
-- (an index range), then within (query radius + its own radius) by the dot product.
CREATE INDEX datasets_centre_dec ON datasets (centre_dec) WHERE centre_dec IS NOT NULL;
CREATE INDEX datasets_radius ON datasets (radius) WHERE radius IS NOT NULL;
