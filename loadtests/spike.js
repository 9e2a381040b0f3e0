// Spike: ramp to 120 VUs quickly, hold, drop. Shedding must be 429/503 with Retry-After;
// a 5xx other than 503 is a bug. Status codes are counted per tag.
import http from "k6/http";
import { check } from "k6";
import { Counter, Trend } from "k6/metrics";
import exec from "k6/execution";

const BASE = __ENV.PIXFLEET_BASE || "http://127.0.0.1:8000";
const KEY = __ENV.PIXFLEET_KEY;
const UPLOAD = __ENV.PIXFLEET_UPLOAD;
// One counter per class of answer (tagged sub-metrics do not reach the summary export).
const statuses = {
  202: new Counter("status_202"),
  429: new Counter("status_429"),
  503: new Counter("status_503"),
};
const otherFailures = new Counter("status_other");
const shedWithoutRetryAfter = new Counter("shed_without_retry_after");
// Latency of the submissions that were accepted, apart from the (fast) refusals.
const accepted = new Trend("accepted_duration", true);
const shed = new Trend("shed_duration", true);

export const options = {
  scenarios: {
    spike: {
      executor: "ramping-vus",
      startVUs: 0,
      stages: [
        { duration: "5s", target: 120 },
        { duration: "20s", target: 120 },
        { duration: "5s", target: 0 },
      ],
    },
  },
  summaryTrendStats: ["avg", "med", "p(95)", "p(99)", "max"],
  discardResponseBodies: true,
};

const body = JSON.stringify({
  inputs: [UPLOAD],
  pipeline: [{ op: "thumbnail", size: 256, format: "webp" }],
  priority: "batch",
});

export default function () {
  const key = `spike-${exec.vu.idInTest}-${exec.vu.iterationInScenario}-${__ENV.RUN_ID}`;
  const res = http.post(`${BASE}/v1/jobs`, body, {
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json",
               "Idempotency-Key": key },
    responseCallback: http.expectedStatuses(202, 429, 503),
  });
  (statuses[res.status] || otherFailures).add(1);
  if (res.status === 202) accepted.add(res.timings.duration);
  if (res.status === 429 || res.status === 503) shed.add(res.timings.duration);
  if ((res.status === 429 || res.status === 503) && !res.headers["Retry-After"]) {
    shedWithoutRetryAfter.add(1);
  }
  check(res, { "accepted or shed": (r) => [202, 429, 503].includes(r.status) });
}
