"""docs/quickstart.ipynb runs from top to bottom, in a fresh kernel, on real MNIST."""
import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_the_quickstart_notebook_runs(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DATA_DIR", str(mnist_root))
    notebook = nbformat.read(ROOT / "docs" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)  # the frontier figure
    assert (tmp_path / "quickstart-results" / "best.onnx").is_file()
    text = "".join(o.get("text", "") for o in outputs)
    assert "trial    3" in text and "trainable parameters" in text  # progress lines, then describe
