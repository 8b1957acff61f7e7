"""The activation store: sites of a target over a dataset, captured once, trusted, streamed.

A capture is content-addressed by (target identity, hook points, dataset identity, dtype) and
lives in ``CACHE/KEY/``: ``inputs.npy``, ``shard-NNNNN/SITE.npy`` (memory-mappable) and
``manifest.json`` (shapes, dtypes, identities, an xxh3-128 checksum of every file, and a sha256
of the manifest itself, checked on open). Each file is written to a temporary name, fsync'd and
renamed, so a file either is complete or is not there; the manifest is written last, and only once every row of every
site was counted in, so a capture is complete exactly when it has one. Finished shards are listed
in ``progress.json`` as they land, so an interrupted capture resumes where it stopped (its stale
temporary files removed first). A full disk stops the capture with the space it needs.

Modules: ``_durable`` (atomic, checksummed writes), ``_capture`` (recording), ``_reading``
(``ActivationSet``, the format, the splits), ``_index`` (``Store``: reuse, the request index,
``cache ls|verify|rm``).
"""

from ._capture import SHARD_BYTES, capture
from ._durable import (file_digest, file_sha256, manifest_digest, new_digest, site_filename, write_array,
                       write_json)
from ._index import Held, Request, Store, date_text
from ._reading import (CHECKSUM, FORMAT_VERSION, TEST_FRACTION, VALIDATION_FRACTION, ActivationSet, CaptureKey,
                       cache_root, numpy_dtype, split_is_test, split_is_validation)
from theorycraft.configs import DTYPES

__all__ = ["CHECKSUM", "DTYPES", "FORMAT_VERSION", "SHARD_BYTES", "TEST_FRACTION", "VALIDATION_FRACTION",
           "ActivationSet", "CaptureKey", "Held", "Request", "Store", "cache_root", "capture", "date_text",
           "file_digest", "file_sha256", "manifest_digest", "new_digest", "numpy_dtype", "site_filename",
           "split_is_test", "split_is_validation", "write_array", "write_json"]
