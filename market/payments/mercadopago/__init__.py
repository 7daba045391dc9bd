"""The MercadoPago adapter: the SDK client, the signature of its notifications (the SDK's
validator) and the inbox of its payment events, kept until a settlement has acted on them."""
