"""The frame path and what runs it: the frame processor, temporal filters, watchdog, live loop and session, runtime controls, the clip job, input checks."""
