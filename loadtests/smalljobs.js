// Small jobs, closed loop: CLIENTS virtual users share JOBS submissions of a 256 px WebP
// thumbnail of one prepared upload (unique Idempotency-Keys), then stop. Run by
// loadtests/run.py smalljobs, which starts the stack and a worker and waits for the jobs.
import http from "k6/http";
import { check } from "k6";
import { Counter } from "k6/metrics";
import exec from "k6/execution";

const BASE = __ENV.PIXFLEET_BASE || "http://127.0.0.1:8000";
const KEY = __ENV.PIXFLEET_KEY;
const UPLOAD = __ENV.PIXFLEET_UPLOAD;
const SIZE = Number(__ENV.SIZE || 256);
const PRIORITY = __ENV.PIXFLEET_PRIORITY || "normal";
const accepted = new Counter("status_202");
const refused = new Counter("status_other");

export const options = {
  scenarios: {
    smalljobs: {
      executor: "shared-iterations",
      vus: Number(__ENV.CLIENTS || 30),
      iterations: Number(__ENV.JOBS || 2000),
      maxDuration: __ENV.MAX_DURATION || "5m",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "max"],
  discardResponseBodies: true,
};

const body = JSON.stringify({
  inputs: [UPLOAD],
  pipeline: [{ op: "thumbnail", size: SIZE, format: "webp" }],
  priority: PRIORITY,
});

export default function () {
  const res = http.post(`${BASE}/v1/jobs`, body, {
    headers: {
      Authorization: `Bearer ${KEY}`,
      "Content-Type": "application/json",
      "Idempotency-Key": `small-${exec.scenario.iterationInTest}-${__ENV.RUN_ID}`,
    },
    tags: { name: "POST /v1/jobs" },
  });
  (res.status === 202 ? accepted : refused).add(1);
  check(res, { "202": (r) => r.status === 202 });
}
