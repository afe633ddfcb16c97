"""Records each task's wall time on each host into the JSON file $TASK_TIMER_OUT: one row per host
and task, the seconds from the task's start to that host's result, with the task's action (its
kind: the module or action plugin it runs) and the host.

Used by scripts/bench only. With one host, a row's time is one module run end to end (connection,
upload, execution, result) as Ansible performs it; with many hosts (the fleet), the task's time is
its slowest row's, since the linear strategy starts the next task only when every host is done.
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
        self.action = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.name, self.action, self.started = task.get_name(), task.action, time.perf_counter()

    def _record(self, result, status):
        self.rows.append({"task": self.name, "action": self.action, "host": result._host.get_name(),
                          "seconds": time.perf_counter() - self.started, "status": status})

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["TASK_TIMER_OUT"], "w") as out:
            json.dump(self.rows, out)
