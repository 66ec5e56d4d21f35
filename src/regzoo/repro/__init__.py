"""Reproductions: ``regzoo repro <slug>`` runs ``regzoo.repro.<slug>`` through the runner."""
