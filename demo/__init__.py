"""`nezabyt demo`: the whole product on one machine — a seeded devportal, the web app, the worker —
installed like a portal installs it, then a month of sales work simulated day by day, with a
summary of what Nezabyt did and what it cost in REST calls.

The devportal's clock and the worker's `now` move together: each simulated day the portal's clock
is set to that day and the worker's jobs run with the same instant (time is an input), so a month
takes seconds and every date the product records is the simulated one.
"""
