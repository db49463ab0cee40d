"""DataLad commands of datalad-rdr."""
