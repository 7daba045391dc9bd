"""Operations: request metrics, alert rules, analytics roll-ups, dependency health and purges.

Reads every context's tables (for reports and retention) and owns `daily_analytics`,
`daily_user_analytics` and `alert_states`."""
