"""test_serve_schema.py - schemathesis (PyPI, an outside tool) generates requests from
/openapi.json and runs them against the real server: no 5xx, every status code, content type
and response body as the document says, schema-valid requests accepted and schema-violating
ones rejected, 405s with an Allow header, the stateful phase following the document's links.
Seeded, so a run is repeatable.

Two runs, because of what a static document cannot say:
- every operation but POST /api/jobs, with all checks but ensure_resource_availability (a job
  naming an unknown model is a 404 about the model, which the check reads as "the dataset
  just created is gone");
- POST /api/jobs without positive_data_acceptance / negative_data_rejection: its "options" are
  the run option table's (ranges, choices, "auto", size suffixes, cross-option rules), served
  by GET /api/options rather than spelled out as a JSON Schema; test_serve_api.py checks that
  table against `loratune train --help` and the bad-option replies.
The server runs with an empty models folder, so no generated job can start training.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

ST = os.path.join(os.path.dirname(sys.executable), "schemathesis")
if not os.path.exists(ST):
    print("schemathesis is not installed in the venv; run tools/setup.sh")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_schema_")


def schemathesis(url, *args):
    cmd = [ST, "run", url + "/openapi.json", "--checks", "all", "--max-examples", "40",
           "--seed", "20261206", "--request-timeout", "20", "--no-color", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, cwd=TMP)
    tail = (r.stdout + r.stderr)[-6000:]
    check(r.returncode == 0, f"schemathesis {' '.join(args)} failed:\n{tail}")
    check("passed" in r.stdout or "No issues found" in r.stdout, f"schemathesis ran nothing:\n{tail}")
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")


def main():
    models = os.path.join(TMP, "models")
    os.makedirs(models)
    work = os.path.join(TMP, "work")
    # a later --models wins over the one servekit passes
    srv = servekit.Server(work, "--models", models, "--max-upload", "1048576", "--quota",
                          "67108864")
    try:
        schemathesis(srv.url, "--exclude-operation-id", "createJob",
                     "--exclude-checks", "ensure_resource_availability")
        schemathesis(srv.url, "--include-operation-id", "createJob", "--exclude-checks",
                     "ensure_resource_availability,positive_data_acceptance,"
                     "negative_data_rejection")
    finally:
        rc, _, err = srv.stop()
        check(rc == 0, f"server exit {rc} after schemathesis: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
