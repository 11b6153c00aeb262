"""The acmezone registry: challenge subdomains, their credentials and TXT values, and the
ordered, resumable record feed the dns replicas build their zone from."""
