# moto's server with atomic conditional writes: started by `cargo xtask services up`.
#
# moto 5.1.22 checks `If-Match` / `If-None-Match: *` and then stores the object in separate
# steps of a threaded server, so two concurrent conditional puts of one key can both succeed
# (measured: 2 of 40 rounds of 5 writers x 10 compare-and-swap increments ended with a value
# written twice). S3 itself makes the check and the write one step, and UDM relies on that
# (index segment merges, the blob conformance races). This wrapper makes moto do the same:
# one lock around its object put and delete handlers. Nothing else changes.
import sys
import threading

from moto.s3.responses import S3Response

_lock = threading.Lock()


def _atomic(handler):
    def locked(self, *args, **kwargs):
        with _lock:
            return handler(self, *args, **kwargs)

    return locked


S3Response.put_object = _atomic(S3Response.put_object)
S3Response.delete_object = _atomic(S3Response.delete_object)

from moto.server import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
