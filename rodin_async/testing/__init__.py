"""A fake Rodin API and result-file host on loopback, for testing code that uses Rodin.

Needs the `testing` extra (`pip install rodin-async[testing]`):

```python
from rodin_async.testing import FakeRodin, Fault

with FakeRodin(api_key="test-key") as server:
    task = server.add_task({"base.glb": 5_000_000, "preview.webp": b"RIFF..."})
    server.add_faults(task, "base.glb", Fault.truncate(at=1_000_000))
    ...  # run the client against server.base_url, then compare with server.content()

with FakeRodin(balance=10.0, generation_time=0.3) as server:
    ...  # the client submits to /rodin, polls /status, downloads the result files
    assert server.submissions[0].fields["tier"] == ["Regular"]
```
"""

from .._public import publish
from ._content import FileSource
from ._faults import Fault
from ._server import FakeRodin
from ._state import Endpoint, RecordedRequest, Submission

__all__ = ["Endpoint", "FakeRodin", "Fault", "FileSource", "RecordedRequest", "Submission"]

publish(__name__, globals(), __all__)
del publish
