"""The deploy: plan, run, switch, health gate, records, notifications, reports, rollback,
recovery, status and history."""
