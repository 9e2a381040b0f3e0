"""SQL of the edge: one class per table family. Stores speak SQL; they decide nothing."""
