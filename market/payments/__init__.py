"""Payments: credit purchases bought through MercadoPago, their settlement and refunds.

Owns `purchases` (with their timeline, `purchase_transitions`), `mercadopago_payments`,
`payment_refunds`, MercadoPago's payment events (`payment_events`, mercadopago/events.py)
and the reconciliation cursor (`sync_cursors`). Its state machines (states.py: purchases,
refunds) are the only code that moves those rows from one state to another; money moves
through `market.ledger`.
"""
