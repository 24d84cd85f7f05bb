"""One router per resource: images, markers, selection, models, jobs."""
