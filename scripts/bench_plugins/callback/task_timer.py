"""Records each task's wall time (task start to its result) into the JSON file $TASK_TIMER_OUT.

Used by scripts/bench only; one host per play, so a task's time is one module run end to end
(connection, upload, execution, result) as Ansible performs it.
"""
import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.rows = []
        self.started = None
        self.name = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.name, self.started = task.get_name(), time.perf_counter()

    def _record(self, result, status):
        self.rows.append({"task": self.name, "seconds": time.perf_counter() - self.started, "status": status})

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["TASK_TIMER_OUT"], "w") as out:
            json.dump(self.rows, out)
