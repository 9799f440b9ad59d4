"""Google Gemini's generateContent API: adapter and translation."""
