"""CyberTipline reports: build NCMEC's XML from confirmed decisions, bundle viral
uploads, and deliver them over the ISPWS protocol through a crash-safe outbox."""
