"""Mailing: customers, contents with manual variables, the Pega trigger webhook, single
and bulk sends, rendering for tracking, and SMTP out.

Every personal send becomes one ``broadcasts`` event, recorded through the recorder.
"""
