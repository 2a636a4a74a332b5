import subprocess
import sys

from loadtest.server import ROOT


def imported_after(statement: str) -> set[str]:
    """Top-level packages a fresh interpreter has imported after `statement`."""
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_format_imports_neither_torch_nor_the_service():
    packages = imported_after("import modelrepo.read, modelrepo.write, modelrepo.schema")
    assert "modelrepo" in packages and not packages & {"torch", "service", "export", "onnxruntime"}


def test_export_does_not_import_the_service():
    packages = imported_after("import export.to_onnx")
    assert {"export", "modelrepo", "torch"} <= packages and "service" not in packages
