"""Small bases shared by every method: argument checks, weight schedules, composition."""
