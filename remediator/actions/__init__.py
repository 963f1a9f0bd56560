"""Actions a playbook step can take: their declarations (arguments) and implementations."""
