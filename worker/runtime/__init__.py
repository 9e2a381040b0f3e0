"""The worker runtime: consume, claim, run in a child slot, record, ack, retry, dead-letter.

Never imports pixel libraries (numpy, cv2, scipy, astropy): those live in ``worker.ops`` and
are imported by child processes only.
"""
