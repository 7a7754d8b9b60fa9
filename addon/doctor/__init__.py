"""`nezabyt doctor`: is this deployment healthy? The Check (check), the deployment's checks (deployment), a
portal's over REST (probe) and in the database (stored), and running them all and the table (report)."""
