// Open loop: RATE submissions per second for DURATION whatever the latency (k6
// constant-arrival-rate; iterations k6 could not start in time count as dropped_iterations).
// Run by loadtests/run.py openloop, which starts the edge alone and reads the summary.
import http from "k6/http";
import { check } from "k6";
import { Counter } from "k6/metrics";
import exec from "k6/execution";

const BASE = __ENV.PIXFLEET_BASE || "http://127.0.0.1:8000";
const KEY = __ENV.PIXFLEET_KEY;
const UPLOAD = __ENV.PIXFLEET_UPLOAD;
const RATE = Number(__ENV.RATE || 300);
const accepted = new Counter("status_202");
const refused = new Counter("status_other");

export const options = {
  scenarios: {
    openloop: {
      executor: "constant-arrival-rate",
      rate: RATE,
      timeUnit: "1s",
      duration: __ENV.DURATION || "30s",
      preAllocatedVUs: Math.max(20, Math.ceil(RATE / 10)),
      maxVUs: Math.max(100, RATE),
    },
  },
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(95)", "p(99)", "max"],
  discardResponseBodies: true,
};

const body = JSON.stringify({
  inputs: [UPLOAD],
  pipeline: [{ op: "thumbnail", size: 256, format: "webp" }],
  priority: "normal",
});

export default function () {
  const res = http.post(`${BASE}/v1/jobs`, body, {
    headers: {
      Authorization: `Bearer ${KEY}`,
      "Content-Type": "application/json",
      "Idempotency-Key": `open-${RATE}-${exec.scenario.iterationInTest}-${__ENV.RUN_ID}`,
    },
    tags: { name: "POST /v1/jobs" },
  });
  (res.status === 202 ? accepted : refused).add(1);
  check(res, { "202": (r) => r.status === 202 });
}
