"""Media: where files live (storage), how untrusted images are checked and rendered (images),
the avatar lifecycle over `media_files` rows (avatars) and the preset designs (presets).

Never imports payments."""
