/* placeholder: replaced by the issue-13 work */
