package ninep

// SplicedReplies returns how many Rread replies s has sent with sendfile.
func SplicedReplies(s *Server) int64 { return s.spliced.Load() }

// ServerFids returns the fid references s counts for all its connections.
func ServerFids(s *Server) int64 { return s.fids.n.Load() }
