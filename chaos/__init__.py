"""distlog.chaos: workloads, fault schedules, the history checker and the report writer."""
