-- What an images or audio call used, in the units it is priced by (ingress/routes/media.py):
-- images made, seconds of audio (sent for a transcription, made for speech when the format
-- tells), characters turned into speech. Zero for every other call, which all earlier rows were.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS images UInt32 DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS audio_seconds Decimal(18, 3) DEFAULT 0;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS characters UInt32 DEFAULT 0
