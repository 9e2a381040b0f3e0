// Submission throughput: every iteration POSTs one job with a unique Idempotency-Key on a
// prepared upload. Run by loadtests/run.py, which starts the stack and reads the summary.
import http from "k6/http";
import { check } from "k6";
import exec from "k6/execution";

const BASE = __ENV.PIXFLEET_BASE || "http://127.0.0.1:8000";
const KEY = __ENV.PIXFLEET_KEY;
const UPLOAD = __ENV.PIXFLEET_UPLOAD;
const PRIORITY = __ENV.PIXFLEET_PRIORITY || "normal";

export const options = {
  scenarios: {
    baseline: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 30),
      duration: __ENV.DURATION || "30s",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "max"],
  discardResponseBodies: true,
  thresholds: { http_req_failed: ["rate<0.001"] },
};

const body = JSON.stringify({
  inputs: [UPLOAD],
  pipeline: [{ op: "thumbnail", size: 256, format: "webp" }],
  priority: PRIORITY,
});

export default function () {
  const key = `k6-${exec.vu.idInTest}-${exec.vu.iterationInScenario}-${__ENV.RUN_ID}`;
  const res = http.post(`${BASE}/v1/jobs`, body, {
    headers: {
      Authorization: `Bearer ${KEY}`,
      "Content-Type": "application/json",
      "Idempotency-Key": key,
    },
    tags: { name: "POST /v1/jobs" },
  });
  check(res, { "202": (r) => r.status === 202 });
}
