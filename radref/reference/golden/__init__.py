"""Golden reference vectors for ports of radref, and the port checker.

A port of Rad to another language or framework proves itself against these
vectors: for every building block (log-softmax, slopes, surjection, gating,
conditioner MLP, coupling layers, whole flows, one Adam step) the file holds
stored inputs and parameters, every output, and the gradients of a stated
scalar loss with respect to every input and parameter.  The layout, the
conventions and the tolerances are documented in ``docs/golden.md``.

The package holds five concepts, one module each:

- :mod:`~radref.reference.golden.codec`       arrays as hex-float JSON, the checksum
- :mod:`~radref.reference.golden.blocks`      the functions under test as forward/backward adapters
- :mod:`~radref.reference.golden.cases`       the case generators and their flags
- :mod:`~radref.reference.golden.document`    the whole document: generation, JSON and npz I/O
- :mod:`~radref.reference.golden.port_check`  comparing a port's results with the vectors

Entry points (re-exported here): :func:`generate` (the document, in memory),
:func:`write_golden` (``radref golden --out DIR``), :func:`load_document`,
:func:`recompute_document`, :func:`check_port` and :func:`format_report`
(``radref check-port``).
"""
from radref.reference.golden.blocks import BLOCKS, SLOPE_FIELDS, Block, compute
from radref.reference.golden.cases import CASE_GENERATORS, FLAGS, generate_cases
from radref.reference.golden.codec import (GoldenFormatError, canonical_json, checksum,
                                           decode_array, encode_array)
from radref.reference.golden.document import (ARRAY_SECTIONS, CASE_KEYS, JSON_NAME, NPZ_NAME,
                                              SCHEMA, SCHEMA_VERSION, VECTORS_DIR,
                                              default_golden_dir, dumps,
                                              from_json, generate, inputs_digest,
                                              load_document, npz_arrays, read_json,
                                              recompute_document, skeleton, to_json,
                                              write_golden, write_npz)
from radref.reference.golden.port_check import (FLOAT64_ONLY, TOLERANCES, FieldResult, Report,
                                                block_scales, check_port, entry_errors,
                                                field_scale, format_report)

__all__ = [
    "BLOCKS", "SLOPE_FIELDS", "Block", "compute",
    "CASE_GENERATORS", "FLAGS", "generate_cases",
    "GoldenFormatError", "canonical_json", "checksum", "decode_array", "encode_array",
    "ARRAY_SECTIONS", "CASE_KEYS", "JSON_NAME", "NPZ_NAME", "SCHEMA", "SCHEMA_VERSION",
    "VECTORS_DIR",
    "default_golden_dir", "dumps", "from_json", "generate", "inputs_digest", "load_document",
    "npz_arrays", "read_json", "recompute_document", "skeleton", "to_json", "write_golden",
    "write_npz",
    "FLOAT64_ONLY", "TOLERANCES", "FieldResult", "Report", "block_scales", "check_port",
    "entry_errors", "field_scale", "format_report",
]
