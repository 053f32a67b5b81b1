"""Offline toy world: news sentences, eSpeak NG Mandarin speech and helpers for the toy corpus and PLM."""
