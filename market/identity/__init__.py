"""Identity and profiles: who is calling (Firebase tokens, users upserted from claims) and what
they show (profiles and privacy settings). Owns `users`, `profiles` and `privacy_settings`."""
